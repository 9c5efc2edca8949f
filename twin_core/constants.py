"""Physical constants used across the subsystems (SI units)."""

AIR_CP_J_PER_KG_K = 1006.0  # dry air at 20-40 C (engineering tables)
AIR_DENSITY_KG_PER_M3 = 1.16  # at 30 C, sea level
WATER_LATENT_J_PER_KG = 2.43e6  # latent heat of vaporisation at 30 C
WATER_DENSITY_KG_PER_M3 = 995.0
SECONDS_PER_HOUR = 3600.0
J_PER_MWH = 3.6e9
