"""Activation Beacon: streaming compression of a frozen LLM's keys/values."""

from longctx.beacon.adapter import AdapterError, BeaconAdapter
from longctx.beacon.config import BeaconConfig, BeaconConfigError
from longctx.beacon.memory import BeaconMemory
from longctx.beacon.model import BeaconModel, BeaconOutput

__all__ = ["AdapterError", "BeaconAdapter", "BeaconConfig", "BeaconConfigError", "BeaconMemory", "BeaconModel", "BeaconOutput"]
