"""longctx: let HuggingFace causal LMs read inputs far longer than their training window."""

from longctx.beacon import AdapterError, BeaconAdapter, BeaconConfig, BeaconConfigError, BeaconMemory, BeaconModel
from longctx.models import DEFAULT_MODEL, load_model

__version__ = "0.1.0"
__all__ = ["AdapterError", "BeaconAdapter", "BeaconConfig", "BeaconConfigError", "BeaconMemory", "BeaconModel",
           "DEFAULT_MODEL", "load_model"]
