"""A faithful local stand-in for OpenRouter's analytics API (`/api/v1/activity` and friends).

The real API cannot be reached from tests or demos, so this package serves the same
contract over real HTTP on loopback, from deterministic fake data, with the live
API's quirks and injectable network faults. See `StandIn` and `Dataset`.
"""

from etl.standin.data import DEMO_INFERENCE_KEY, DEMO_MANAGEMENT_KEY, Dataset, Spike
from etl.standin.server import Fault, RequestRecord, StandIn

__all__ = ["DEMO_INFERENCE_KEY", "DEMO_MANAGEMENT_KEY", "Dataset", "Fault", "RequestRecord", "Spike", "StandIn"]
