"""The tutorial's Optuna code (section 3.3 (2)), unchanged, run under gentune's runner:

    gentune tune --objective-fn examples/tutorial_optuna.py:objective --trials 20

`train_gan` is the part the tutorial leaves out ("模型训练逻辑(略)"); gentune.tutorial supplies it:
the tutorial's GAN trained on the embedded digits, returning its final generator loss.
"""

import optuna

from gentune.tutorial import train_gan


# 定义目标函数
def objective(trial):
    learning_rate = trial.suggest_loguniform("learning_rate", 1e-5, 1e-2)
    batch_size = trial.suggest_int("batch_size", 32, 128)
    # 模型训练逻辑(略)
    loss = train_gan(learning_rate=learning_rate, batch_size=batch_size)
    return loss


if __name__ == "__main__":
    # 创建和运行优化器
    study = optuna.create_study(direction="minimize")
    study.optimize(objective, n_trials=20)
    # 打印最佳参数
    print("Best parameters:", study.best_params)
