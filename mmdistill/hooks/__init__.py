from .ctkd_hook import CTKDTemperatureHook

__all__ = ['CTKDTemperatureHook']
