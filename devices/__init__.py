"""What does one memristor do?

A device model is a frozen, validated :class:`DeviceModel`; the physics are pure
functions on tensors: :func:`program`, :func:`read`, :func:`drift`.  Presets from
published device data live in :data:`presets`.
"""

from devices.model import DeviceModel
from devices.physics import (drift, drift_factor, drift_nu, program, read, read_sigma, read_sigma_rel,
                             static_read_noise)
from devices.presets import presets

__all__ = ["DeviceModel", "program", "read", "drift", "drift_nu", "drift_factor", "read_sigma", "read_sigma_rel", "static_read_noise",
           "presets"]
