"""``rhip demo``: the whole platform on one machine, on a generated region, in one command.

The demo runs the real pipeline end to end — generate a region, push it through the real
connectors (FHIR files, HL7 v2 over MLLP, CSV, DICOM, device JSON), link identities, export the
lake, run surveillance, create demo accounts — then serves the API. Each step is an entry in
:data:`STEPS`, so a region can add its own.
"""

from rhip.demo.steps import STEPS, DemoContext, DemoStep, register_step, run_demo

__all__ = ["STEPS", "DemoContext", "DemoStep", "register_step", "run_demo"]
