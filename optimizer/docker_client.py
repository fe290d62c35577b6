"""The Docker Engine client, and whether it holds an image: one place that says what to do
when no engine runs."""

from __future__ import annotations

from optimizer.errors import PackageFailed


def client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # the SDK raises several unrelated types when no engine runs
        raise PackageFailed(f"no Docker Engine reachable ({exc}); start dockerd, or use the "
                            "daemonless writer with package.image.base_tarball") from None


def has_image(client, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False
