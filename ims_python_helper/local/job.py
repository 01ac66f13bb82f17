"""``local job``: an image-build job and a customization job, run the way the job pods run them.

Every step the pods take runs as the client's public command line in a child
process (``python -m ims_python_helper ...``), against whatever stack the
environment names; what the pods get from IMS and the platform (the job
record, a presigned URL, the template values, a package repository, the build
itself) is made here:

image-build job (``create``)
    load a small kiwi-like recipe (``recipe upload``), make the job, presign the
    recipe's URL, ``recipe fetch`` it (templated), ``recipe wait_for_repos``
    (a repository on the local package-repository server, up after one poll),
    build: ``mksquashfs`` of the fetched recipe with a kernel and initrd under
    ``boot/``, ``image upload_artifacts``, ``image set_job_status ... success``.
customization job (``customize``)
    make the job, presign the new image's rootfs (from its manifest),
    ``image fetch`` it (md5 checked, unpacked), change ``etc/motd``, squash
    it again, ``image upload_artifacts`` as a new image, ``success``.

After each step the job record is read back; the statuses it showed, in
order, go into the summary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, TextIO
from urllib.parse import urlsplit

from ims_python_helper.clients.transport import OFF_WORDS, ON_WORDS
from ims_python_helper.local.client_token import fetch_token

#: The names the job gives what it makes.
RECIPE_NAME = "local-job-recipe"
IMAGE_NAME = "local-job-image"
CUSTOM_IMAGE_NAME = "local-job-image-customized"
#: The repository the recipe names, served by the local package-repository server.
REPO_PATH = "sles/15/products"
ROOTFS_TYPE = "application/vnd.cray.image.rootfs.squashfs"
#: What the customization writes into the image.
MOTD = "customized by ims_python_helper local job {job_id}\n"
#: Variables a stack must give for ``local job --attach``.
STACK_VARIABLES = (
    "IMS_URL",
    "OAUTH_CLIENT_ID",
    "OAUTH_CLIENT_SECRET",
    "OAUTH_CLIENT_ENDPOINT",
    "S3_ENDPOINT",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
)
KIWI_CONFIG = """<?xml version="1.0" encoding="utf-8"?>
<image schemaversion="7.4" name="{{{{ image_name }}}}">
  <description type="system"><specification>ims_python_helper local job</specification></description>
  <repository type="rpm-md" alias="products"><source path="{repo_url}"/></repository>
  <repository type="rpm-md" alias="obs"><source path="obs://SUSE:SLE-15:GA/standard"/></repository>
  <packages type="image"><package name="kernel-default"/></packages>
</image>
"""


class JobFailed(Exception):
    """A step of the local job failed; the message is one line naming the step and why."""


def check_attachable(environ: Mapping[str, str]) -> Optional[str]:
    """Why the environment does not name a local stack (``local up``'s exports), or None when it does."""
    missing = [name for name in STACK_VARIABLES if not environ.get(name)]
    if missing:
        return f"{', '.join(missing)} not set; run it where `local up`'s exports are in effect, or drop --attach"
    for name in ("IMS_URL", "OAUTH_CLIENT_ENDPOINT", "S3_ENDPOINT"):
        host = urlsplit(environ[name]).hostname or ""
        if host not in ("127.0.0.1", "::1", "localhost"):
            return f"{name} points at {host!r}; local job only runs against a stack on this machine"
    return None


class LocalJob:
    """Runs both jobs against the stack ``environ`` names, in ``work_dir``; ``run()`` returns the summary."""

    def __init__(self, environ: Mapping[str, str], work_dir: Path, stderr: TextIO) -> None:
        self.environ = dict(environ)
        self.environ.update({"IMS_PROGRESS": "log", "PYTHONUNBUFFERED": "1"})
        self.work_dir = work_dir
        self.stderr = stderr
        self.jobs: List[Dict[str, Any]] = []
        self.images: List[Dict[str, str]] = []
        self.recipe: Dict[str, str] = {}
        self._token: Optional[str] = None
        self._s3: Any = None

    # -- talking to the stack ------------------------------------------------------

    def _say(self, line: str) -> None:
        self.stderr.write(f"local job: {line}\n")
        self.stderr.flush()

    def client(self, *argv: str, job: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Run one client command in a child process; its JSON result, or ``JobFailed`` with its one-line reason."""
        env = dict(self.environ)
        if job is not None:
            env["IMS_JOB_ID"] = job["id"]
        command = [sys.executable, "-m", "ims_python_helper", *argv]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if job is not None:
            self._note_status(job)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error:" in line]
            reason = errors[-1].split("error:", 1)[1].strip() if errors else f"exit status {done.returncode}"
            raise JobFailed(f"{argv[0]} {argv[1]} failed: {reason}")
        try:
            result: Dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            raise JobFailed(f"{argv[0]} {argv[1]} printed no JSON result") from None
        return result

    def _ims(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        import requests

        if self._token is None:
            self._token = fetch_token(self.environ)
        response = requests.request(
            method,
            self.environ["IMS_URL"].rstrip("/") + path,
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=30,
            verify=self.environ.get("CA_CERT") or True,
        )
        if response.status_code >= 300:
            raise JobFailed(f"IMS {method} {path} answered HTTP {response.status_code}")
        return response.json()

    def _s3_client(self) -> Any:
        from ims_python_helper.local.presign import s3_client_for_endpoint

        if self._s3 is None:
            self._s3 = s3_client_for_endpoint(
                self.environ["S3_ENDPOINT"],
                self.environ["S3_ACCESS_KEY"],
                self.environ["S3_SECRET_KEY"],
                _verify(self.environ),
            )
        return self._s3

    def _presign(self, s3_url: str) -> str:
        """A presigned GET URL of an ``s3://bucket/key`` link (what IMS hands a job pod)."""
        from ims_python_helper.local.presign import presigned_get_url

        parts = urlsplit(s3_url)
        return presigned_get_url(self._s3_client(), parts.netloc, parts.path.lstrip("/"))

    def _new_job(self, job_type: str, artifact_id: str) -> Dict[str, Any]:
        body = {
            "job_type": job_type,
            "artifact_id": artifact_id,
            "public_key_id": str(uuid.uuid4()),
            "image_root_archive_name": IMAGE_NAME if job_type == "create" else CUSTOM_IMAGE_NAME,
        }
        record = self._ims("POST", "/jobs", body)
        job = {"id": record["id"], "job_type": job_type, "statuses": [record["status"]]}
        self.jobs.append(job)
        self._say(f"{job_type} job {job['id']}: {record['status']}")
        return job

    def _note_status(self, job: Dict[str, Any]) -> None:
        record = self._ims("GET", f"/jobs/{job['id']}")
        if record.get("status") != job["statuses"][-1]:
            job["statuses"].append(record.get("status"))
            self._say(f"{job['job_type']} job {job['id']}: {record.get('status')}")
        if record.get("resultant_image_id"):
            job["resultant_image_id"] = record["resultant_image_id"]

    def _set_status(self, job: Dict[str, Any], status: str) -> None:
        self.client("image", "set_job_status", job["id"], status, job=job)

    def _publish(self, name: str, root: Path, job: Dict[str, Any]) -> str:
        rootfs = self.work_dir / f"{name}.squashfs"
        squash(root, rootfs)
        boot = root / "boot"
        result = self.client(
            "image",
            "upload_artifacts",
            name,
            job["id"],
            "-r",
            str(rootfs),
            "-k",
            str(boot / "vmlinuz"),
            "-i",
            str(boot / "initrd"),
            job=job,
        )
        image_id = str(result["ims_image_record"]["id"])
        self.images.append({"id": image_id, "name": name})
        self._say(f"published image {name} {image_id}")
        return image_id

    def _rootfs_of(self, image_id: str) -> Dict[str, Any]:
        """The rootfs entry of an image's manifest (link and md5), read as IMS and S3 hold it."""
        link = self._ims("GET", f"/images/{image_id}")["link"]["path"]
        parts = urlsplit(link)
        body = self._s3_client().get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"].read()
        manifest = json.loads(body)
        entry: Dict[str, Any] = next(a for a in manifest["artifacts"] if a["type"] == ROOTFS_TYPE)
        return entry

    # -- the two jobs ------------------------------------------------------------------

    def build(self, repo_url: str) -> str:
        """The image-build job; returns the new image's id."""
        recipe_file = make_recipe(self.work_dir / "recipe-source", repo_url)
        recipe = self.client(
            "recipe",
            "upload",
            RECIPE_NAME,
            str(recipe_file),
            "--distro",
            "sles15",
            "--template-dictionary",
            f"image_name={IMAGE_NAME}",
        )["ims_recipe_record"]
        self.recipe = {"id": recipe["id"], "name": RECIPE_NAME}
        self._say(f"loaded recipe {recipe['id']}")
        job = self._new_job("create", recipe["id"])
        values = self.work_dir / "template_dictionary"
        # IMS mounts the record's template_dictionary for the pod; JSON is YAML too.
        values.write_text(json.dumps({i["key"]: i["value"] for i in recipe.get("template_dictionary") or []}))
        tree = self.work_dir / "recipe"
        url = self._presign(recipe["link"]["path"])
        self.client("recipe", "fetch", url, str(tree), job["id"], "--template-dictionary-file", str(values), job=job)
        self.client("recipe", "wait_for_repos", str(tree), job["id"], "--repo-poll-interval", "0.2", job=job)
        self._set_status(job, "building_image")
        make_boot_files(tree / "boot", job["id"])
        image_id = self._publish(IMAGE_NAME, tree, job)
        self._set_status(job, "success")
        return image_id

    def customize(self, image_id: str) -> str:
        """The customization job on ``image_id``; returns the new image's id."""
        job = self._new_job("customize", image_id)
        rootfs = self._rootfs_of(image_id)
        work = self.work_dir / "customize"
        self.client(
            "image",
            "fetch",
            self._presign(rootfs["link"]["path"]),
            str(work),
            job["id"],
            "--md5",
            rootfs["md5"],
            job=job,
        )
        self._set_status(job, "waiting_on_user")
        root = work / "image-root"
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "motd").write_text(MOTD.format(job_id=job["id"]))
        self._set_status(job, "packaging_artifacts")
        new_id = self._publish(CUSTOM_IMAGE_NAME, root, job)
        self._set_status(job, "success")
        return new_id

    def run(self, repo_url: str) -> Dict[str, Any]:
        """Both jobs; the summary (``JobFailed`` on the first failure, the failing job set to ``error``)."""
        try:
            self.customize(self.build(repo_url))
        except BaseException:
            self._fail_open_job()
            raise
        return self.summary("success")

    def _fail_open_job(self) -> None:
        open_jobs = [job for job in self.jobs if job["statuses"][-1] not in ("success", "error")]
        for job in open_jobs:
            try:
                self._set_status(job, "error")
            except Exception as err:  # the original failure is what gets reported
                self._say(f"could not set job {job['id']} to error: {err}")

    def summary(self, result: str) -> Dict[str, Any]:
        """What ran: the jobs with the statuses their records showed in order, and the images made."""
        return {"result": result, "recipe": self.recipe, "jobs": self.jobs, "images": self.images}


# -- files the jobs make ------------------------------------------------------------------


def make_recipe(directory: Path, repo_url: str) -> Path:
    """A kiwi-like recipe tarball: a templated config.xml naming ``repo_url``, its template list, a root overlay."""
    directory.mkdir(parents=True)
    (directory / "config.xml").write_text(KIWI_CONFIG.format(repo_url=repo_url))
    (directory / ".ims_recipe_template.yaml").write_text("template_files:\n  - config.xml\n")
    (directory / "root" / "etc").mkdir(parents=True)
    (directory / "root" / "etc" / "motd").write_text("built by ims_python_helper local job\n")
    tarball = directory.parent / "recipe.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(directory / name, arcname=name)
    return tarball


def make_boot_files(boot: Path, job_id: str) -> None:
    """The build's kernel and initrd (random bytes: the publish, not the boot, is what is shown)."""
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "vmlinuz").write_bytes(os.urandom(256 * 1024))
    (boot / "initrd").write_bytes(job_id.encode() + os.urandom(512 * 1024))


def squash(root: Path, target: Path) -> None:
    """``mksquashfs ROOT TARGET``; ``JobFailed`` naming the tool when it is missing or fails."""
    mksquashfs = shutil.which("mksquashfs")
    if mksquashfs is None:
        raise JobFailed("mksquashfs is not installed; install squashfs-tools")
    done = subprocess.run(
        [mksquashfs, str(root), str(target), "-noappend", "-quiet"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise JobFailed(f"mksquashfs of {root.name} failed: {lines[-1] if lines else done.returncode}")


def _verify(environ: Mapping[str, str]) -> Any:
    """``S3_SSL_VERIFY`` as boto3 takes it: an off word is False, an on word or nothing True, else a CA path."""
    value = environ.get("S3_SSL_VERIFY", "").strip()
    if value.lower() in OFF_WORDS:
        return False
    return True if not value or value.lower() in ON_WORDS else value
