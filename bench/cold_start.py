"""Figure 6: import time of each Lambda handler module, and the size of the deployment package.

Import time: each handler module is imported in a fresh interpreter with the
environment the template gives its function, plus Lambda's own variables and fake
endpoints on a closed local port (nothing is called at import). ``import boto3`` is
timed the same way in the same run, interleaved with the handlers; every figure is
the median of several runs. Interpreter start-up is excluded from both. Bytecode
caches exist for every module, as they do for boto3 in the Lambda runtime.

Package size: every function has ``CodeUri: ../``, so all of them ship one package:
the project's runtime packages plus the runtime dependencies of ``pyproject.toml``
at the versions of ``constraints.txt``, installed with pip for the Lambda platform of
the template (``python3.11``, ``arm64``) into a folder under ``.cache/bench``.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    FAKE_AWS_ENVIRONMENT,
    PROJECT_ROOT,
    RESULTS_DIR,
    FigureResult,
    Mode,
    Row,
    run_main,
    stderr,
)
from infra.local.runner import lambda_environment
from infra.local.template import Template

RUNS = {"tiny": 1, "quick": 5, "full": 15}
TARGET_RATIO = 2.0
CLOSED_ENDPOINT = "http://127.0.0.1:9"
PROJECT_PACKAGES = ("domain", "application", "adapters", "projections", "lambdas")
LAMBDA_PLATFORM = "manylinux2014_aarch64"
LAMBDA_PYTHON = "3.11"
# The Lambda python3.11 runtime includes boto3 and botocore, at its own versions.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath")
TEMPLATE_PARAMETERS = {"StripeApiKey": "sk_test_bench", "CarrierApiUrl": CLOSED_ENDPOINT}

IMPORT_SCRIPT = """
import importlib, sys, time
started = time.perf_counter()
importlib.import_module(sys.argv[1])
print(time.perf_counter() - started)
"""


def function_environments() -> dict[str, tuple[str, dict[str, str]]]:
    """Return function id -> (handler module, the environment of a fresh Lambda container)."""
    template = Template.load(parameters=TEMPLATE_PARAMETERS)
    services = {
        **FAKE_AWS_ENVIRONMENT,
        "AWS_ENDPOINT_URL": CLOSED_ENDPOINT,
        "AWS_ENDPOINT_URL_DYNAMODB": CLOSED_ENDPOINT,
    }
    environments = {}
    for function_id, spec in template.functions().items():
        name = template.local_name(function_id)
        environment = lambda_environment(
            spec, name, code_dir=PROJECT_ROOT, service_environment=services
        )
        for key, value in list(environment.items()):
            if key.endswith("_QUEUE_URL") and not value.startswith("http"):
                environment[key] = f"{CLOSED_ENDPOINT}/123456789012/{value}"
        # Lambda writes no bytecode into the package; the caches here were written before.
        environment.pop("PYTHONDONTWRITEBYTECODE", None)
        module = spec.handler.rsplit(".", 1)[0]
        environments[function_id] = (module, environment)
    return environments


def time_import(module: str, environment: dict[str, str]) -> float:
    completed = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT, module],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"importing {module} failed:\n{completed.stderr[-2000:]}")
    return float(completed.stdout.strip().splitlines()[-1]) * 1000


def import_profile(module: str, environment: dict[str, str], count: int = 8) -> dict[str, float]:
    """Return milliseconds of self import time per top-level package (``-X importtime``)."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    totals: Counter[str] = Counter()
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_part, _cumulative, name = line.split("|", 2)
        totals[name.strip().split(".")[0]] += int(self_part.split(":")[1])
    return {name: micros / 1000 for name, micros in totals.most_common(count)}


def measure_imports(runs: int) -> dict[str, Any]:
    environments = function_environments()
    baseline_environment = dict(next(iter(environments.values()))[1])
    targets = {"boto3": ("boto3", baseline_environment)} | environments
    errors: dict[str, str] = {}
    for name, (module, environment) in list(targets.items()):
        try:
            time_import(module, environment)  # writes any missing bytecode caches
        except RuntimeError as error:
            errors[name] = str(error)[-600:]
            del targets[name]
    samples: dict[str, list[float]] = {name: [] for name in targets}
    for run in range(runs):
        stderr(f"figure 6: import run {run + 1}/{runs}")
        for name, (module, environment) in targets.items():
            samples[name].append(time_import(module, environment))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    slowest = max((name for name in targets if name != "boto3"), key=lambda name: medians[name])
    return {
        "medians_ms": medians,
        "samples_ms": samples,
        "modules": {name: module for name, (module, _) in environments.items()},
        "slowest": slowest,
        "errors": errors,
    }


# Package size ---------------------------------------------------------------------------


def runtime_requirements() -> list[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def build_package_dependencies() -> Path:
    """Install the runtime dependencies for Lambda's platform; reuse an earlier install."""
    requirements = runtime_requirements()
    constraints = (PROJECT_ROOT / "constraints.txt").read_text()
    digest = hashlib.sha256(
        "\n".join([*requirements, constraints, LAMBDA_PLATFORM, LAMBDA_PYTHON]).encode()
    ).hexdigest()[:12]
    target = RESULTS_DIR / f"lambda-package-{digest}"
    if (target / ".complete").is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    stderr(f"figure 6: installing the runtime dependencies for {LAMBDA_PLATFORM} into {target}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "--platform",
            LAMBDA_PLATFORM,
            "--implementation",
            "cp",
            "--python-version",
            LAMBDA_PYTHON,
            "--only-binary=:all:",
            "-c",
            str(PROJECT_ROOT / "constraints.txt"),
            *requirements,
        ],
        check=True,
    )
    (target / ".complete").write_text("")
    return target


def folder_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def distribution_sizes(site: Path) -> dict[str, int]:
    """Return bytes per top-level name in an installed folder (packages and their metadata)."""
    sizes: Counter[str] = Counter()
    for entry in site.iterdir():
        if entry.name.startswith(".") or entry.name == "bin":
            continue
        name = entry.name.split("-")[0].lower() if entry.suffix == ".dist-info" else entry.name
        name = name.removesuffix(".py")
        sizes[name] += folder_bytes(entry) if entry.is_dir() else entry.stat().st_size
    return dict(sizes.most_common())


def zipped_bytes(folders: list[Path], exclude: tuple[str, ...] = ()) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "package.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for folder in folders:
                root = folder if folder.name not in PROJECT_PACKAGES else folder.parent
                for path in sorted(folder.rglob("*")):
                    relative = path.relative_to(root)
                    if "__pycache__" in relative.parts or not path.is_file():
                        continue
                    if relative.parts[0].split("-")[0].lower() in exclude:
                        continue
                    bundle.write(path, relative)
        return archive.stat().st_size


def measure_package() -> dict[str, Any]:
    site = build_package_dependencies()
    project_bytes = 0
    for package in PROJECT_PACKAGES:
        project_bytes += sum(
            path.stat().st_size
            for path in (PROJECT_ROOT / package).rglob("*.py")
            if "__pycache__" not in path.parts
        )
    by_distribution = distribution_sizes(site)
    dependency_bytes = sum(by_distribution.values())
    provided = sum(by_distribution.get(name, 0) for name in RUNTIME_PROVIDED)
    folders = [PROJECT_ROOT / package for package in PROJECT_PACKAGES]
    return {
        "unzipped_bytes": project_bytes + dependency_bytes,
        "zipped_bytes": zipped_bytes([*folders, site]),
        "zipped_bytes_without_runtime_boto3": zipped_bytes([*folders, site], RUNTIME_PROVIDED),
        "unzipped_bytes_without_runtime_boto3": project_bytes + dependency_bytes - provided,
        "project_bytes": project_bytes,
        "largest": dict(list(by_distribution.items())[:8]),
        "site": str(site),
    }


def run(mode: Mode) -> FigureResult:
    result = FigureResult("6", "Cold start: handler import time and package size", mode)
    imports = measure_imports(RUNS[mode])
    medians = imports["medians_ms"]
    boto3_ms = medians["boto3"]
    for name, module in imports["modules"].items():
        if name in imports["errors"]:
            result.rows.append(
                Row(
                    f"import {module}",
                    None,
                    "ms",
                    boto3_ms,
                    "import boto3",
                    target=f"<= {TARGET_RATIO}x",
                    met=False,
                    note="import failed",
                )
            )
            result.notes.append(f"{module} failed to import: {imports['errors'][name]}")
            continue
        ratio = medians[name] / boto3_ms
        result.rows.append(
            Row(
                f"import {module}",
                medians[name],
                "ms",
                boto3_ms,
                "import boto3",
                target=f"<= {TARGET_RATIO}x",
                met=ratio <= TARGET_RATIO,
            )
        )
    slowest_module = imports["modules"][imports["slowest"]]
    profile = import_profile(slowest_module, function_environments()[imports["slowest"]][1])
    imports["import_profile_of_slowest_ms"] = profile
    try:
        package = measure_package()
    except (subprocess.CalledProcessError, OSError) as error:
        package = {"error": str(error)}
        result.notes.append(f"Package size not measured: pip failed ({error}).")
    if "error" not in package:
        mib = 1024 * 1024
        result.rows += [
            Row(
                "package, unzipped (all functions share it)",
                package["unzipped_bytes"] / mib,
                "MiB",
                250,
                "Lambda limit, unzipped",
                target="<= 250 MiB",
                met=package["unzipped_bytes"] <= 250 * mib,
            ),
            Row(
                "package, zipped",
                package["zipped_bytes"] / mib,
                "MiB",
                50,
                "Lambda limit, zipped upload",
                target="<= 50 MiB",
                met=package["zipped_bytes"] <= 50 * mib,
            ),
            Row(
                "package, zipped, boto3/botocore left to the runtime",
                package["zipped_bytes_without_runtime_boto3"] / mib,
                "MiB",
                50,
                "Lambda limit, zipped upload",
            ),
        ]
        largest = ", ".join(
            f"{name} {size / mib:.1f} MiB" for name, size in list(package["largest"].items())[:5]
        )
        result.notes.append(
            f"Largest parts of the package (unzipped): {largest}; the project's own code is "
            f"{package['project_bytes'] / 1024:.0f} KiB."
        )
    top = ", ".join(f"{name} {ms:.0f} ms" for name, ms in list(profile.items())[:6])
    if imports["errors"]:
        result.status = "error"
    result.notes += [
        f"Median of {RUNS[mode]} fresh interpreters per module, interleaved; interpreter "
        "start-up excluded. Bytecode caches exist for all modules, as the runtime has them "
        "for boto3; a package built without .pyc files compiles at every cold start, which "
        "`python -m compileall` in the build avoids.",
        f"Self import time by top-level package for {slowest_module} (-X importtime): {top}.",
        "All functions share CodeUri ../ (the repository root) and there is no "
        "requirements.txt there, so the package above is what the build should ship; what "
        "`sam build` makes of the current template was not checked (no SAM CLI here).",
    ]
    result.details = {"imports": imports, "package": package}
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(run, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
