"""Test-wide fixtures. Each fx_* module is owned by one area; conftest only gathers them."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from fx_hub import *  # noqa: F401,F403,E402  (local Hub server)
from fx_models import *  # noqa: F401,F403,E402  (generated checkpoints)
