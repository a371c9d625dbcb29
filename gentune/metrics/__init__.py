"""Sample-quality metrics in a feature space learned from the dataset itself.

- FID: Frechet distance between Gaussians fitted to real and generated features (lower is better;
  biased upwards at finite N, so compare only at equal N and next to the floor).
- KID: unbiased kernel MMD^2 between the feature sets (lower is better; about 0 when alike).
- precision / recall: share of generated samples that look real, and of real variety covered.
- label_entropy / classes_covered: spread of the classifier's predicted labels (mode collapse).

`Evaluator` ties them together for one dataset; the functions work on any feature arrays.
"""

from gentune.metrics.coverage import label_coverage
from gentune.metrics.evaluator import Evaluator, default_n
from gentune.metrics.features import EXTRACTOR_VERSION, FEATURE_DIM, embed, extractor_path, get_extractor
from gentune.metrics.fid import frechet_distance, gaussian_stats
from gentune.metrics.kid import kid
from gentune.metrics.prdc import RealManifold, precision_recall

__all__ = [
    "EXTRACTOR_VERSION",
    "FEATURE_DIM",
    "Evaluator",
    "RealManifold",
    "default_n",
    "embed",
    "extractor_path",
    "frechet_distance",
    "gaussian_stats",
    "get_extractor",
    "kid",
    "label_coverage",
    "precision_recall",
]
