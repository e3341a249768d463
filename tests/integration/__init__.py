"""Against a real dockerd, mosquitto and registry, marker `integration`."""
