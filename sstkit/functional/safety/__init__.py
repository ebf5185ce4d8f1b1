"""SimpleSafetyTests-style safety evaluation of chat models: suites, judges, agreement and the run loop.

Modules: :mod:`.suite` (loaders and label normalisation), :mod:`.over_refusal` (benign prompts that look risky),
:mod:`.judges` (the judge protocol and its four kinds), :mod:`.agreement` (judge vs human labels),
:mod:`.runner` (generate, judge, write files and a summary). Import them explicitly; nothing here needs Lightning.
"""
