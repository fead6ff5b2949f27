"""The images' Debian base tree, as made after debootstrap (the tree is cached, so a cold cache is
the only time this runs; checked here without debootstrap on a tree of the same shape)."""

from homelab.containers import base


def test_a_fresh_tree_gets_apt_sources_for_the_images_release(tmp_path):
    for folder in ("etc/apt", "var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "etc/hostname").write_text("build-machine\n")
    base._trim(tmp_path, "http://deb.example.org/debian")
    sources = (tmp_path / "etc/apt/sources.list").read_text().splitlines()
    assert sources[0] == f"deb http://deb.example.org/debian {base.SUITE} main"
    assert not (tmp_path / "etc/hostname").exists()
