"""Helpers imported by ``hub/jupyterhub_config.py``: roles, profiles, authenticators, spawners, OS accounts."""

from medimg_hub.hubconf.gpu import GpuPool, GpuPoolExhaustedError
from medimg_hub.hubconf.profiles import (PROFILES, Profile, ProfileNotAllowedError, choose_profile,
                                         kubespawner_profile_list, profiles_for_groups)
from medimg_hub.hubconf.roles import ADMINS, ATTENDINGS, DIRECTORS, ENGINEERS, RESIDENTS, ROLE_GROUPS, hub_roles
from medimg_hub.hubconf.state import HubState

__all__ = [
    "ADMINS", "ATTENDINGS", "DIRECTORS", "ENGINEERS", "PROFILES", "RESIDENTS", "ROLE_GROUPS", "GpuPool",
    "GpuPoolExhaustedError", "HubState", "Profile", "ProfileNotAllowedError", "choose_profile", "hub_roles",
    "kubespawner_profile_list", "profiles_for_groups",
]
