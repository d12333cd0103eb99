"""sockbench's benchmark: measure servers under load, record it, analyse it, present it (``bench`` command).

``bench run scenarios/X.yaml`` is a pipeline, and the package is laid out as
its stages. Each stage reads what the one before it left and never reaches
back, so a newcomer can start at any stage with only the stages below it in
mind; ``tests/test_layers.py`` checks the imports (inside functions too)::

    scenario.yaml
        |  describe   bench.scenario, bench.thresholds
        v
    +---------+      +-----------------+      +--------------+      +---------------------------+
    | measure | ---> |     record      | ---> |   analyse    | ---> |          present          |
    | loadgen |      | bench.results:  |      | bench.stats  |      | bench.plots, bench.report |
    | monitor |      | runs.csv, hlog, |      | findings     |      | bench.compare             |
    | calibr. |      | summary.json    |      |              |      |                           |
    +---------+      +-----------------+      +--------------+      +---------------------------+

    bench.runner drives one scenario through every stage; bench.cli is the command line over all.

*Describe.* A scenario (:mod:`bench.scenario`) names the models, the
services, the load and what is swept; :mod:`bench.thresholds` says what a
run must reach to pass. Nothing has run yet.

*Measure.* For each run, :mod:`bench.runner` starts the server (:mod:`servers.launch`),
drives it with the load generator (:mod:`bench.loadgen`: worker processes,
one JSON result back, as pyperf does) while :mod:`bench.monitor` samples the
server's process tree and the kernel's counters. :mod:`bench.calibration`
measures the machine's own ceiling with C programs, so a Python figure can
be read against what the machine can do at all.

*Record.* :mod:`bench.results` owns the results folder's format in both
directions: the columns of runs.csv and what each means, the latency
histograms, the environment and the stored calibration. Measuring code
writes through it; everything after reads through it, never from the
measuring code.

*Analyse.* :mod:`bench.stats` turns repetitions into medians with
confidence intervals and writes summary.json with its warnings;
:mod:`bench.findings` writes the sentences a reader should take away.

*Present.* :mod:`bench.plots` draws the figures, :mod:`bench.report` the
self-contained HTML report, :mod:`bench.compare` sets two results folders
side by side. The runner, which after the runs asks for the summary, the
figures and the report, and :mod:`bench.cli` stand above every stage.

Below every stage sit the words and numbers they share: :mod:`bench.units`
(parsing sizes and durations), :mod:`bench.format` (printing a figure the
same way everywhere, without importing matplotlib) and
:mod:`bench.vocabulary` (connection outcomes, point flags and the thresholds
behind them, each with one owner).
"""
