class LabError(Exception):
    """Something the user must fix; `lab` prints it as one line and exits non-zero."""
