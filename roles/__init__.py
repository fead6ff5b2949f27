"""One packaged pyinfra @deploy module per component.

Each role lives in roles/<name>/ (its code and its defaults, as a pydantic Settings model), its
templates in templates/<name>/, its tests in tests/roles/test_<name>.py. deploys/all.py applies the
roles of each host by the inventory groups it is in, in the order of ROLE_ORDER.
"""
