"""Imports every resource module so its views attach to the API blueprint."""
