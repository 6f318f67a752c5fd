# pytest fixtures of the libvirt tests live in libvirt_env.py (with the
# helpers the test files import); this makes pytest see them.
from libvirt_env import domains, guest_files, libvirt_host, plugin  # noqa: F401
