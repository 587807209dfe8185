"""FHIR R4 knowledge shared by every module: systems, identifiers, validation, search parameters."""
