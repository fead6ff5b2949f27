"""`homelab`: day-2 work on the cluster from the control machine, one subcommand group per area.

    homelab image build [NAME...] [--no-cache]   build the service images (default: all)
    homelab image save -o DIR [NAME...]          write each to DIR/NAME-VERSION.tar for `docker load`

Images are built in the Docker engine that DOCKER_HOST names (the docker CLI's default socket
otherwise). A new area adds its own subparser in `main` and a module that does the work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from homelab.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homelab", description=__doc__.split("\n\n")[0].strip("`: "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    areas = parser.add_subparsers(dest="area", required=True)

    image = areas.add_parser("image", help="OCI images of toy-redis and alert-relay")
    image_commands = image.add_subparsers(dest="command", required=True)
    build = image_commands.add_parser("build", help="build images from the wheels the nodes get")
    build.add_argument("names", nargs="*", metavar="NAME", help="toy-redis, alert-relay (default: both)")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer (the result is the same)")
    build.set_defaults(run=image_build)
    save = image_commands.add_parser("save", help="write built images to tarballs (docker load reads them)")
    save.add_argument("names", nargs="*", metavar="NAME", help="toy-redis, alert-relay (default: both)")
    save.add_argument("-o", "--output-dir", type=Path, required=True, metavar="DIR")
    save.set_defaults(run=image_save)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"homelab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def docker_client():
    import docker

    try:
        return docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        raise ConfigError("DOCKER_HOST", "", f"cannot reach a Docker engine ({exc}); start dockerd or set "
                                             "DOCKER_HOST") from None


def _names(args: argparse.Namespace) -> list[str]:
    from homelab.containers import images

    return [images.spec_named(name).name for name in args.names] or list(images.specs())


def image_build(args: argparse.Namespace) -> int:
    from homelab.containers import images

    names = _names(args)
    client = docker_client()
    for name in names:
        spec = images.spec_named(name)
        image = images.build(client, spec, no_cache=args.no_cache, log=lambda line: print(f"homelab: {line}"))
        print(f"{spec.tag} {image.id} {image.attrs['Size'] / 2**20:.0f} MiB")
    return 0


def image_save(args: argparse.Namespace) -> int:
    from homelab.containers import images

    client = docker_client()
    for name in _names(args):
        print(f"{images.save(client, name, args.output_dir)}: {images.spec_named(name).tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
