"""ServiceNow <-> Sentinel incident sync: one ticket per incident, changes both ways, no echo."""
