"""Scenario: what-if simulations on a region graph (metapopulation SEIR "digital twin").

``model`` (disease, interventions, ensemble runs on the native engine ``healthai.ops.metapop``),
``graphs`` (county graph, gravity mobility), ``calibrate`` (fit to observed counts), ``reference``
(NumPy/SciPy implementations for tests and benchmarks), ``service`` + ``plugin`` (gRPC).
"""
