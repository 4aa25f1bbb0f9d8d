"""Schedules and sensors: they decide when runs start, nothing more."""

SCHEDULES: list = []
SENSORS: list = []
