"""The same job again, outside the browser: the API call that creates it and the recipe that runs it from a
shell (``python -m compression_core run recipe.json``). The job page shows both."""

from __future__ import annotations

import json
import posixpath
import re

from webapp.jobs.models import Job

#: Where the command-line recipe writes its results.
CLI_OUTPUT_DIR = "condense-out"

# A list of scalars as json.dumps(indent=2) writes it, one item a line; a string never holds a raw newline,
# so ",\n" only ever separates items.
_SCALAR_LIST = re.compile(r"\[\n\s*([^\[\]{}\n][^\[\]{}]*?)\n\s*\]")


def pretty_json(value) -> str:
    """JSON indented by 2, with lists of scalars kept on one line.

    Example::

        >>> print(pretty_json({"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5}))
        {
          "op_types": ["Conv2d", "Linear"],
          "sparse_ratio": 0.5
        }
    """
    text = json.dumps(value, indent=2)
    return _SCALAR_LIST.sub(lambda m: "[" + ", ".join(item.strip() for item in m.group(1).split(",\n")) + "]", text)


def job_api_body(job: Job) -> dict:
    """The JSON body of ``POST /api/v1/jobs/`` that creates a job equal to ``job``.

    Example::

        >>> job_api_body(job)
        {'model': 3, 'algorithm': 'L1NormPruner', 'params': {...}, 'speedup': True, 'dataset': 'digits',
         'device': 'cpu', 'name': 'L1NormPruner on digits', 'tags': []}
    """
    body = {"model": job.model_id, "algorithm": job.algorithm, "params": job.params, "speedup": job.speedup}
    if job.dataset_upload_id:
        body["dataset_id"] = job.dataset_upload_id
    else:
        body["dataset"] = job.dataset
    body.update(device=job.device, name=job.name, tags=list(job.tags or []))
    if job.time_limit_s:
        body["time_limit_s"] = job.time_limit_s
    return body


def job_curl(job: Job, jobs_url: str) -> str:
    """A curl command posting :func:`job_api_body` to ``jobs_url`` (the absolute ``/api/v1/jobs/``),
    with the token in ``$CONDENSE_TOKEN``."""
    body = pretty_json(job_api_body(job))
    quoted = "'" + body.replace("'", "'\\''") + "'"  # one shell word, whatever the JSON holds
    return (f"curl -X POST {jobs_url} \\\n"
            '  -H "Authorization: Token $CONDENSE_TOKEN" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f"  -d {quoted}")


def job_cli_recipe(job: Job) -> dict:
    """The recipe (``compression_core.jobs.Recipe.from_dict``) that runs ``job`` from a shell.

    A built-in model without weights is named by its architecture; an uploaded file (a model, weights,
    a dataset) is named by its file name, for the copy the user keeps next to the recipe.

    Example::

        >>> job_cli_recipe(job)["model"]
        {'architecture': 'digits_cnn'}
    """
    model = job.model
    source: dict = {}
    if model.file:
        source["path"] = posixpath.basename(model.file.name)
    if model.architecture:
        source["architecture"] = model.architecture
    if model.num_classes:
        source["num_classes"] = model.num_classes
    if job.dataset_upload_id:
        dataset = {"path": posixpath.basename(job.dataset_upload.file.name), "format": job.dataset_upload.format}
    else:
        dataset = job.dataset or None
    return {
        "model": source,
        "input_shape": list(model.input_shape),
        "algorithm": job.algorithm,
        "params": job.params,
        "speedup": job.speedup,
        "dataset": dataset,
        "device": "gpu" if job.queue == "gpu" else "cpu",
        "output_dir": CLI_OUTPUT_DIR,
    }


def job_cli_files(job: Job) -> list[str]:
    """What the user must have next to the recipe: the uploaded files it names by path, described."""
    files = []
    if job.model.file:
        files.append(f"{posixpath.basename(job.model.file.name)}: the model file you uploaded as "
                     f"\u201c{job.model.name}\u201d")
    if job.dataset_upload_id:
        files.append(f"{posixpath.basename(job.dataset_upload.file.name)}: the dataset file you uploaded as "
                     f"\u201c{job.dataset_upload.name}\u201d")
    return files


def job_reproduce(job: Job, jobs_url: str) -> dict:
    """What the job page shows under Parameters: ``params_json``, ``curl``, ``cli`` (the recipe JSON) and
    ``cli_files`` (see :func:`job_cli_files`)."""
    return {
        "params_json": pretty_json(job.params),
        "curl": job_curl(job, jobs_url),
        "cli": pretty_json(job_cli_recipe(job)),
        "cli_files": job_cli_files(job),
    }
