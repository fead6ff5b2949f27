"""One packaged pyinfra @deploy module per component.

Each role lives in roles/<name>/ (its code and its defaults, as a pydantic Settings model), its
templates in templates/<name>/, its tests in tests/roles/test_<name>.py. deploys/all.py applies to
each host the roles homelab.topology assigns it, in the order of homelab.topology.ROLES.
"""
