"""Jobs: a recipe, validated once, run by one runner that hands it to one handler per kind of algorithm.

- :mod:`.recipe`: :class:`Recipe` and :class:`ModelSource` (plain values, JSON in and out);
- :mod:`.validation`: :func:`validate_recipe` (cheap in the web request, full in the worker);
- :mod:`.runner`: :func:`run_job` and the handler table;
- :mod:`.pruning`, :mod:`.quantization`, :mod:`.analysis`, :mod:`.chain`: the handlers;
- :mod:`.errors`: :func:`explain_failure`, the one sentence a failed job shows, and :class:`JobFailed`;
- :mod:`.measure`: what every model is measured on; :mod:`.stages` and :mod:`.progress`: progress and its
  estimate; :mod:`.result`: :class:`JobResult`;
- :mod:`.device`: the job's device (:func:`~.device.job_device`), its CPU-only steps, its peak GPU memory;
- :mod:`.inspect`: :func:`inspect_model`, the summary of an uploaded model, and its :func:`batch_report`.

Example::

    from compression_core.jobs import ModelSource, Recipe, run_job

    recipe = Recipe(model=ModelSource(architecture="digits_cnn"), input_shape=[1, 8, 8],
                    algorithm="L1NormPruner", dataset="digits", output_dir="out/",
                    params={"config_list": [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]})
    result = run_job(recipe)
    print(result.metrics["before"]["params"], "->", result.metrics["after"]["params"])
"""

from .errors import JobFailed, explain_failure
from .inspect import batch_report, fixed_batch_message, inspect_model
from .recipe import ModelSource, Recipe
from .result import Artifact, JobResult
from .runner import run_job
from .stages import STAGES, JobCancelled, Progress
from .validation import validate_recipe

__all__ = [
    "Artifact",
    "JobCancelled",
    "JobFailed",
    "JobResult",
    "ModelSource",
    "Progress",
    "Recipe",
    "STAGES",
    "batch_report",
    "explain_failure",
    "fixed_batch_message",
    "inspect_model",
    "run_job",
    "validate_recipe",
]
