"""medimg_hub: the hub-side package (profiles, spawner, platform API, demo data).

Runs on the trusted side of the platform (DESIGN.md section 3); kernels never import it.
"""
