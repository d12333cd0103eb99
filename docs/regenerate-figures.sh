#!/usr/bin/env bash
# Regenerate the figures of docs/guide.md on this machine.
#
# Runs each shipped scenario the guide uses once (about 20 minutes in all), then
# copies the figures the guide shows into docs/figures/ under their guide names
# (<lesson>-<figure>.png). The full results folders, with runs.csv,
# summary.json and report.html, stay under $RESULTS_ROOT for reading the
# numbers that the captions quote.
#
# Scenario names as arguments run only their blocks, e.g.
#   bash docs/regenerate-figures.sh how-many-workers deployed
# (littles-law also runs rate-limited, its rate-limited half).
#
# Run it from anywhere inside the repository, with `bench` on PATH (the
# project's venv activated), or name a Python that has the project installed
# with PYTHON=/path/to/python (used as `python -m bench`); without either it
# tries .venv/bin/python, then python3. Keep the machine
# otherwise idle: a busy neighbour changes the results 2-4x.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too

cd "$(dirname "$0")/.."

if [[ -n ${PYTHON:-} ]]; then
    BENCH=("$PYTHON" -m bench)
elif command -v bench >/dev/null 2>&1; then
    BENCH=(bench)
elif [[ -x .venv/bin/python ]]; then
    BENCH=(.venv/bin/python -m bench)
else
    BENCH=(python3 -m bench)
fi

# Temporary folders of the blocks that run, removed on every exit (a block that
# does not run leaves its entry empty).
copy="" pool_root="" loop_root=""
trap 'rm -rf ${copy:+"$copy"} ${pool_root:+"$pool_root"} ${loop_root:+"$loop_root"}' EXIT

# want NAME: true when NAME was asked for on the command line, or nothing was.
want() {
    [[ ${#SELECTED[@]} -eq 0 ]] && return 0
    local name
    for name in "${SELECTED[@]}"; do
        [[ $name == "$1" ]] && return 0
    done
    return 1
}
SCENARIOS=(quick cpu-bound many-clients connection-churn small-backlog large-files timeauth-rtt
    littles-law slow-clients how-many-workers deployed crashes copy-on-write http-models)
SELECTED=("$@")
for name in "${SELECTED[@]}"; do
    if [[ " ${SCENARIOS[*]} " != *" $name "* ]]; then
        echo "error: no figures come from a scenario named '$name'; known: ${SCENARIOS[*]}" >&2
        exit 2
    fi
done

# One fresh folder per invocation, so each scenario's results folder is the
# only match of its glob below.
RESULTS_ROOT=${RESULTS_ROOT:-results/guide-$(date -u +%Y%m%dT%H%M%SZ)}
FIGURES=docs/figures
mkdir -p "$RESULTS_ROOT" "$FIGURES"

# run SCENARIO: run scenarios/SCENARIO.yaml and print its results folder.
run() {
    local scenario=$1
    if ! "${BENCH[@]}" run "scenarios/$scenario.yaml" --results "$RESULTS_ROOT" >&2; then
        echo "error: bench run scenarios/$scenario.yaml failed; see its output above" >&2
        exit 1
    fi
    local dirs=("$RESULTS_ROOT"/*-"$scenario")
    if [[ ${#dirs[@]} -ne 1 || ! -d ${dirs[0]} ]]; then
        echo "error: expected one results folder for $scenario in $RESULTS_ROOT, found: ${dirs[*]}" >&2
        exit 1
    fi
    echo "${dirs[0]}"
}

# take DIR FIGURE NAME: copy DIR/figures/FIGURE to docs/figures/NAME.
take() {
    cp "$1/figures/$2" "$FIGURES/$3"
    echo "docs/figures/$3  <-  $1/figures/$2"
}

# Lesson 1 (sequential), lesson 3 (PSS vs RSS)
if want quick; then
    dir=$(run quick)
    take "$dir" throughput_echo.png                sequential-throughput_echo.png
    take "$dir" connections_echo.png               sequential-connections_echo.png
    take "$dir" timelines/sequential-p0-r1.png     sequential-timeline.png
    take "$dir" memory_echo.png                    forking-memory_echo.png
fi

# Lessons 2 and 4 (the GIL; one slow handler stalls all)
if want cpu-bound; then
    dir=$(run cpu-bound)
    take "$dir" throughput.png                     threading-throughput.png
    take "$dir" latency.png                        eventloop-latency.png
fi

# Lessons 2, 3 and 4 (threads at 1000 clients, max_children, memory per connection)
if want many-clients; then
    dir=$(run many-clients)
    take "$dir" timelines/threading-p3-r1.png      threading-timeline-1000.png
    take "$dir" timelines/forking-p2-r1.png        forking-timeline-100.png
    take "$dir" memory.png                         eventloop-memory.png
fi

# Lesson 3 (fork cost per connection)
if want connection-churn; then
    dir=$(run connection-churn)
    take "$dir" throughput.png                     forking-churn-throughput.png
fi

# Lesson 5 (the listen backlog)
if want small-backlog; then
    dir=$(run small-backlog)
    take "$dir" connect_time.png                   backlog-connect_time.png
    take "$dir" latency_spectrum.png               backlog-latency_spectrum-128.png
    # The spectrum at backlog 5 (point 1): re-plot a copy, so the results folder
    # keeps its default figures.
    copy=$(mktemp -d)
    cp -r "$dir" "$copy/"
    "${BENCH[@]}" plot "$copy/$(basename "$dir")" --point 1 --no-timelines --format png >&2
    take "$copy/$(basename "$dir")" latency_spectrum.png backlog-latency_spectrum-5.png
fi

# Lesson 6 (sendfile)
if want large-files; then
    dir=$(run large-files)
    take "$dir" throughput.png                     sendfile-throughput.png
fi

# Round trips per request: echo and timeauth over a 10 ms link (network namespaces: root only)
if want timeauth-rtt; then
    if [[ $(id -u) -eq 0 ]]; then
        dir=$(run timeauth-rtt)
        take "$dir" throughput_echo.png            timeauth-rtt-throughput_echo.png
        take "$dir" throughput_timeauth.png        timeauth-rtt-throughput_timeauth.png
    else
        echo "skipping timeauth-rtt: its network namespaces need root" >&2
    fi
fi

# Lesson 9 (Little's law at 1, 10 and 50 ms; a rate-limited link). Root only: network namespaces.
if want littles-law; then
    if [[ $(id -u) -eq 0 ]]; then
        dir=$(run littles-law)
        take "$dir" littles_law.png                    littles-law.png
        take "$dir" latency.png                        littles-latency.png
        take "$dir" memory.png                         littles-memory.png
        take "$dir" timelines/forking-p2-r3.png        littles-forking-timeline-50ms.png
        dir=$(run rate-limited)
        take "$dir" latency.png                        littles-ratelimited-latency.png
    else
        echo "lesson 9 skipped: its scenarios build network namespaces, which needs root" >&2
    fi
fi

# Slow clients (slow readers swept; then idle clients with the idle timeout swept)
if want slow-clients; then
    dir=$(run slow-clients)
    take "$dir" slow_clients.png                   slow-clients.png
    idle_root="$RESULTS_ROOT/slow-idle"
    mkdir -p "$idle_root"
    if ! "${BENCH[@]}" run scenarios/slow-clients.yaml --results "$idle_root" --set load.mix.slow_reader=0 \
        --set load.mix.idle=0.5 --set 'server.idle_timeout=[30s, 1s]' --set repetitions=1 >&2; then
        echo "error: the idle-timeout run of scenarios/slow-clients.yaml failed; see its output above" >&2
        exit 1
    fi
    take "$(echo "$idle_root"/*-slow-clients)" slow_clients.png slow-idle-timeout.png
fi

# How many workers (prefork and reuseport workers; then threadpool threads, a pass of its own)
if want how-many-workers; then
    dir=$(run how-many-workers)
    take "$dir" throughput.png                     workers-throughput.png
    take "$dir" latency.png                        workers-latency.png
    take "$dir" memory.png                         workers-memory.png
    take "$dir" timelines/prefork-p0-r1.png        workers-prefork-timeline-1.png
    pool_root=$(mktemp -d)
    if ! "${BENCH[@]}" run scenarios/how-many-workers.yaml --results "$pool_root" --set 'models=[threadpool]' \
        --set server.workers=null --set 'server.threads=[1, 2, 4, 8]' >&2; then
        echo "error: the threadpool pass of scenarios/how-many-workers.yaml failed; see its output above" >&2
        exit 1
    fi
    mv "$pool_root"/*-how-many-workers "$RESULTS_ROOT/how-many-workers-threadpool"
    dir=$RESULTS_ROOT/how-many-workers-threadpool
    take "$dir" throughput.png                     workers-threadpool-throughput.png
    take "$dir" latency.png                        workers-threadpool-latency.png
fi

# The deployed models
if want deployed; then
    dir=$(run deployed)
    take "$dir" throughput_echo.png                deployed-throughput_echo.png
    take "$dir" latency_echo.png                   deployed-latency_echo.png
    take "$dir" memory_echo.png                    deployed-memory_echo.png
    take "$dir" throughput_file.png                deployed-throughput_file.png
    # ... and the event-loop models on uvloop (server.loop reaches them alone), a pass of its own
    loop_root=$(mktemp -d)
    if ! "${BENCH[@]}" run scenarios/deployed.yaml --results "$loop_root" --set service=echo \
        --set 'models=[asyncio, asyncio-protocol, reuseport, c-reference]' --set server.loop=uvloop >&2; then
        echo "error: the uvloop pass of scenarios/deployed.yaml failed; see its output above" >&2
        exit 1
    fi
    mv "$loop_root"/*-deployed "$RESULTS_ROOT/deployed-uvloop"
    take "$RESULTS_ROOT/deployed-uvloop" throughput.png deployed-uvloop-throughput.png
fi

# Lesson "A crashing handler": its single-process servers die on purpose, so
# bench run exits 1; any failed run other than a server that died is an error.
if want crashes; then
    if ! "${BENCH[@]}" run scenarios/crashes.yaml --results "$RESULTS_ROOT" >&2; then
        dir=$(ls -d "$RESULTS_ROOT"/*-crashes)
        if ! "${PYTHON:-python3}" - "$dir/runs.csv" <<'PY'
import csv, sys
bad = [r["run_id"] for r in csv.DictReader(open(sys.argv[1])) if r["status"] != "ok" and not r["server_died_s"]]
sys.exit(f"runs failed for another reason than a dead server: {bad}" if bad else 0)
PY
        then
            exit 1
        fi
    fi
    dir=$(ls -d "$RESULTS_ROOT"/*-crashes)
    take "$dir" crashes.png                        crash-survival.png
    take "$dir" timelines/prefork-p6-r1.png        crash-prefork-timeline.png
fi

# Lesson "Copy-on-write"
if want copy-on-write; then
    dir=$(run copy-on-write)
    take "$dir" copy_on_write.png                  cow-uss.png
fi

# http.server and the concurrency choice (the http service on every model)
if want http-models; then
    dir=$(run http-models)
    take "$dir" throughput.png                     http-throughput.png
    take "$dir" latency.png                        http-latency.png
    take "$dir" timelines/threading-p3-r1.png      http-threading-timeline-1000.png
fi

echo "Figures regenerated in $FIGURES; results in $RESULTS_ROOT"
