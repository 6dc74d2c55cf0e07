#!/usr/bin/env bash
# The prepared GPU check (issue 14, point 7): one script, one call, under 8 minutes on an NVIDIA
# H100/H200 with a CUDA driver and Python, run from the repository root of a copy of the tree.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # GPU run; OUT_DIR default: $OUT, else ./gpu_check_out
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]  # the same steps on the CPU, smallest sizes (~1.5 min)
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh ...  # the same as --dry-run
#
# Steps (GPU budget in seconds; each step runs under its own `timeout`, capped by what is left of
# the whole run's deadline, GPU_CHECK_DEADLINE, default 470 s; a failing or timed-out step is
# recorded with its exit code (124/137: timed out) and the next one runs):
#   install           150  pip install -e '.[serve,onnx]' -- skipped when torch (with CUDA), engine and
#                          the serve packages already import. Keeps an installed CUDA torch (pinned to its
#                          version); with no torch, -c constraints-cpu.txt (torch==2.13.0, which PyPI
#                          serves as the CUDA build on Linux x86_64). With no index reachable, installs
#                          from a wheels folder (GPU_CHECK_WHEELS, default ./.whl when present) or gives up.
#   preflight          30  nvidia-smi, torch / CUDA / cuDNN versions, package versions; every flag of the
#                          GPU commands below is checked against that CLI's --help -> preflight.json
#   parity             60  benchmarks.gpu_parity: demo + random FFHQ-shape 256/512/1024, batch 4: float32
#                          (TF32 off) vs float32 default (TF32), float32/float16/bfloat16 channels_last,
#                          float16, float16 + channels_last + CUDA graphs -> parity.json
#   synthesis          90  benchmarks.synthesis 256/512/1024 px x batch 1/8/32, float32 + float16 (NCHW,
#                          eager), 3 warm-ups, <= 20 passes or 1.5 s a cell -> synthesis/synthesis.json
#   synthesis_graphs   60  the same grid, float16 + channels_last + CUDA-graph replay
#                          -> synthesis_graphs/synthesis.json
#   checkpoint         30  a random-weight FFHQ-shape 512 px checkpoint (float16) in the work folder
#   sessions          100  benchmarks.sessions on it (512 px), --backend auto (torch float16 channels_last
#                          without TensorRT), 25 fps, 3 s per configuration, up to 32 sessions,
#                          --no-discover (placeholder directions) -> sessions.json
#   loopback           80  benchmarks.loopback, demo 128 px on CUDA, 8 s streamed, 5 bursts -> loopback.json
# Sum without install: 450 s; expected on an H200 about 4 minutes (not yet measured: no GPU was lent).
# With tensorrt installed, sessions' --backend auto would build a TensorRT engine first (minutes).
#
# A machine with no package index: its Python may lack soxr, webrtcvad-wheels, aiortc, av and
# aiortc's aioice, dnspython, ifaddr, cryptography, cffi, pycparser, google-crc32c, pyee, pylibsrtp,
# pyopenssl. Download their wheels for that machine's Python beforehand into ./.whl (pip download
# --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ... -d .whl
# NAME==VERSION); install then uses them (--no-index --find-links). Without them sessions and
# loopback fail (recorded) and the other steps still run.
#
# Everything lands flat in OUT_DIR, 8 files (the device tool brings back at most 8, two folders
# down): gpu_check_summary.json (each step: exit code, seconds, timeout, output file, whether it
# parses, the log's tail when it failed), gpu_check.log (all steps' output), preflight.json,
# parity.json, synthesis/synthesis.json, synthesis_graphs/synthesis.json, sessions.json,
# loopback.json. The checkpoint, caches ($STYLECAST_CACHE) and per-step logs live in a temporary
# work folder that is removed at exit. Exit status: 0 when every step exited 0 with its output.
#
# Dry run (CPU, one thread, < 2 minutes on a 2-core VM; tests/benchmarks/test_gpu_check.py runs it): every step
# runs for real at the smallest size and one or two passes (32 px parity with the demo, 16 px
# synthesis, a 32 px random checkpoint for sessions, a 3 s loopback). What the CPU cannot run is
# stood in for and checked by the parser instead: float16 and CUDA graphs need CUDA, so the
# synthesis_graphs step times bfloat16 + channels_last, parity reports those variants as skipped,
# and preflight checks the GPU commands' flags against each CLI's --help; install only checks the
# imports (never pip); sessions uses --backend torch (auto would export ONNX, too slow for a smoke run).

set -uo pipefail

SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
REPO_ROOT=$(cd "$(dirname "$SCRIPT")/.." && pwd)
cd "$REPO_ROOT" || exit 2
PY=${PYTHON:-$(command -v python3 || command -v python || echo python3)}
export PYTHON=$PY
DRY=${GPU_CHECK_DRY:-0}
[[ $DRY == 1 || $DRY == true || $DRY == yes ]] && DRY=1 || DRY=0

# Modules the steps import (the project's core and serve dependencies).
MODULES=(torch engine numpy PIL safetensors tqdm soxr webrtcvad aiohttp aiortc av)

check_modules() {  # exit 0 when every module imports (and, unless dry, CUDA is available)
    "$PY" - "$DRY" "${MODULES[@]}" <<'EOF'
import importlib, sys
dry, mods = sys.argv[1] == "1", sys.argv[2:]
missing = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:
        missing.append(f"{m} ({type(exc).__name__}: {exc})"[:160])
try:
    import torch
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {cuda}")
    if not cuda and not dry:
        missing.append("torch with CUDA (torch.cuda.is_available() is False)")
except Exception:
    pass
print("missing: " + "; ".join(missing) if missing else "all of: " + " ".join(mods))
sys.exit(1 if missing else 0)
EOF
}

# ---- internal step: install -----------------------------------------------------------------
do_install() {
    if check_modules; then
        echo "install: skipped (everything imports)"
        return 0
    fi
    if [[ $DRY == 1 ]]; then
        echo "dry run: not installing (pip install -c constraints-cpu.txt -e '.[serve,onnx]' installs what is missing)"
        return 1
    fi
    local wheels=${GPU_CHECK_WHEELS:-} index=${PIP_INDEX_URL:-https://pypi.org/simple} cons torch_ver torch_cuda online=0
    [[ -z $wheels && -d $REPO_ROOT/.whl ]] && wheels=$REPO_ROOT/.whl
    if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/pip/", timeout=5)' \
            "$index" >/dev/null 2>&1; then
        online=1
    fi
    echo "package index $index: $([[ $online == 1 ]] && echo reachable || echo NOT reachable); wheels: ${wheels:-none}"
    if [[ $online == 0 && -z $wheels ]]; then
        echo "install: no package index and no wheels folder (GPU_CHECK_WHEELS); not installing"
        return 1
    fi
    local pip=(-m pip install --disable-pip-version-check --progress-bar off --timeout 15 --retries 1)
    [[ -n $wheels ]] && pip+=(--find-links "$wheels")
    [[ $online == 0 ]] && pip+=(--no-index --no-build-isolation)
    # a fresh, throwaway machine: allow pip into a system Python too (no effect inside a venv)
    export PIP_BREAK_SYSTEM_PACKAGES=1
    cons=$(mktemp)
    torch_ver=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)
    torch_cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null)
    if [[ -n $torch_ver && ( $torch_cuda == 1 || -z $(command -v nvidia-smi) ) ]]; then
        echo "torch==$torch_ver" >"$cons"          # keep the torch that is there (CUDA, or no GPU driver)
    else
        cp constraints-cpu.txt "$cons"             # torch==2.13.0: the CUDA build from PyPI on Linux x86_64
        if [[ -n $torch_ver ]]; then               # a CPU-only torch on a GPU machine: replace it
            echo "+ $PY ${pip[*]} --force-reinstall -c $cons torch"
            "$PY" "${pip[@]}" --force-reinstall -c "$cons" torch
        fi
    fi
    echo "+ $PY ${pip[*]} -c $cons -e .[serve,onnx]"
    "$PY" "${pip[@]}" -c "$cons" -e ".[serve,onnx]"
    echo "pip exit status $?"
    rm -f "$cons"
    check_modules
}

# ---- internal step: preflight ---------------------------------------------------------------
do_preflight() {  # $1: JSON out, $2: file of "module<TAB>--flag --flag ..." lines (the GPU commands)
    "$PY" - "$1" "$2" "$DRY" <<'EOF'
import json, os, platform, shutil, subprocess, sys
out, cmds, dry = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

def run(cmd, timeout=60):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return -1, f"{type(exc).__name__}: {exc}"

rep = {"dry_run": dry, "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
       "cpu_count": os.cpu_count()}
if shutil.which("nvidia-smi"):
    rc, text = run(["nvidia-smi"])
    print(text)
    q = ("name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,"
         "power.draw,power.limit,pstate")
    rc2, csv = run(["nvidia-smi", f"--query-gpu={q}", "--format=csv"])
    print(csv)
    rep["nvidia_smi"] = {"exit_code": rc, "text": text, "query": csv}
else:
    print("nvidia-smi: not found")
    rep["nvidia_smi"] = None
import torch
cuda = torch.cuda.is_available()
t = {"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
     "cuda_available": cuda, "device_count": torch.cuda.device_count() if cuda else 0,
     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
     "num_threads": torch.get_num_threads()}
if cuda:
    p = torch.cuda.get_device_properties(0)
    t.update(device_name=p.name, capability=f"{p.major}.{p.minor}", total_memory_gib=round(p.total_memory / 2**30, 1),
             multiprocessors=p.multi_processor_count)
rep["torch"] = t
gpu = f", {t['device_name']} (sm {t['capability']}, {t['total_memory_gib']} GiB)" if cuda else ""
print(f"python {rep['python']} ({sys.executable}); torch {t['version']}, CUDA {t['cuda']}, cuDNN {t['cudnn']}, "
      f"cuda available: {cuda}{gpu}")
from importlib import metadata
pk = {}
for name in ("stylecast", "torch", "numpy", "pillow", "safetensors", "soxr", "webrtcvad-wheels", "aiortc", "av",
             "aiohttp", "uvloop", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "tensorrt", "matplotlib"):
    try:
        pk[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pk[name] = None
rep["packages"] = pk
print("packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v))
rc, head = run(["git", "rev-parse", "HEAD"], timeout=10)
rep["git_commit"] = head.strip() if rc == 0 else None
# every flag of the GPU commands must be one the CLI lists in its --help
wanted, checks, bad = {}, {}, []
for line in open(cmds, encoding="utf-8"):
    module, _, flags = line.rstrip("\n").partition("\t")
    if module:
        wanted.setdefault(module, [])
        wanted[module] += [f for f in flags.split() if f not in wanted[module]]
for module, flags in wanted.items():                 # one --help per CLI
    rc, text = run([sys.executable, "-m", module, "--help"], timeout=120)
    words = set(text.replace(",", " ").replace("[", " ").replace("]", " ").replace("=", " ").split())
    missing = [f for f in flags if f not in words]
    checks[module] = {"flags": flags, "help_exit_code": rc, "missing": missing}
    if rc != 0 or missing:
        bad.append(f"{module}: help exit {rc}, flags not in --help: {missing}")
rep["gpu_command_flags"] = checks
print("GPU command flags: " + ("all listed by their CLIs' --help" if not bad else "; ".join(bad)))
problems = bad + ([] if dry or cuda else ["CUDA is not available"])
rep["problems"] = problems
with open(out, "w", encoding="utf-8") as f:
    json.dump(rep, f, indent=2)
    f.write("\n")
sys.exit(1 if problems else 0)
EOF
}

# ---- internal step dispatch (the script runs itself under `timeout` for these) -----------------
case ${1:-} in
    __install) shift; do_install; exit $? ;;
    __preflight) shift; do_preflight "$@"; exit $? ;;
esac

usage() { sed -n '2,8p' "$SCRIPT" | sed 's/^# \{0,1\}//'; }
POS=""
while (( $# )); do
    case $1 in
        --dry-run) DRY=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "gpu_check: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) [[ -n $POS ]] && { echo "gpu_check: one output folder only" >&2; exit 2; }; POS=$1 ;;
    esac
    shift
done
OUT_DIR=${POS:-${OUT:-./gpu_check_out}}
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs"
export GPU_CHECK_DRY=$DRY PYTHONUNBUFFERED=1 STYLECAST_CACHE="$WORK/cache" STYLECAST_OFFLINE=1
if [[ $DRY == 1 ]]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} CUDA_VISIBLE_DEVICES=""
    DEADLINE=${GPU_CHECK_DEADLINE:-170}
else
    DEADLINE=${GPU_CHECK_DEADLINE:-470}
fi
KILL_GRACE=5
STEPS_TSV=$WORK/steps.tsv
SUMMARY=$OUT_DIR/gpu_check_summary.json
LOG=$OUT_DIR/gpu_check.log
: >"$STEPS_TSV"
: >"$LOG"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T0=$(date +%s.%N)
STEP_NO=0
N_STEPS=8

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

write_summary() {  # the summary JSON from the steps so far (rewritten after every step)
    if ! "$PY" - "$STEPS_TSV" "$SUMMARY" "$OUT_DIR" "$WORK" "$DRY" "$DEADLINE" "$STARTED" "$(elapsed "$T0")" <<'EOF'
import json, os, sys
tsv, summary, out_dir, work, dry, deadline, started, total = sys.argv[1:]
steps = []
for line in open(tsv, encoding="utf-8"):
    name, rc, secs, limit, output, log, cmd = line.rstrip("\n").split("\t")
    s = {"name": name, "exit_code": int(rc), "seconds": float(secs), "timeout_s": int(limit),
         "timed_out": int(rc) in (124, 137), "output": output or None, "command": cmd}
    path = output if os.path.isabs(output) else os.path.join(out_dir, output)
    s["output_ok"] = os.path.isfile(path) if output else True      # install writes no file
    if output and path.startswith(work + os.sep):
        s["output_removed_at_exit"] = True                          # the work folder's checkpoint
    if s["output_ok"] and path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except ValueError as exc:
            s["output_ok"], s["output_error"] = False, f"not JSON: {exc}"
    if int(rc) != 0 or not s["output_ok"]:
        try:
            with open(log, encoding="utf-8", errors="replace") as f:
                s["log_tail"] = f.read().splitlines()[-20:]
        except OSError:
            pass
    steps.append(s)
rep = {"check": "benchmarks/gpu_check.sh", "mode": "dry-run (CPU)" if dry == "1" else "gpu", "started": started,
       "seconds": float(total), "deadline_s": int(deadline), "out_dir": out_dir,
       "all_ok": bool(steps) and all(s["exit_code"] == 0 and s["output_ok"] for s in steps), "steps": steps}
tmp = summary + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(rep, f, indent=2)
    f.write("\n")
os.replace(tmp, summary)
EOF
    then
        echo "gpu_check: could not write $SUMMARY" >&2
    fi
}

# step NAME BUDGET_S OUTPUT -- COMMAND...   (OUTPUT relative to OUT_DIR, or absolute)
step() {
    local name=$1 budget=$2 output=$3 t rc=124 start dt log remaining
    shift 4
    STEP_NO=$((STEP_NO + 1))
    log=$WORK/logs/$name.log
    remaining=$((DEADLINE - $(printf '%.0f' "$(elapsed "$T0")")))
    t=$budget
    (( t > remaining - KILL_GRACE )) && t=$((remaining - KILL_GRACE))
    if [[ -n $output ]]; then
        if [[ $output == /* ]]; then rm -f "$output"; else rm -f "$OUT_DIR/$output"; fi
    fi
    printf '\n== [%d/%d] %s (timeout %d s of %d s left)\n   $ %s\n' "$STEP_NO" "$N_STEPS" "$name" "$t" "$remaining" "$*"
    start=$(date +%s.%N)
    if (( t < 5 )); then
        echo "not run: the run's deadline (${DEADLINE} s) is spent" >"$log"
        t=0
    else
        timeout -k "$KILL_GRACE" "$t" "$@" >"$log" 2>&1 </dev/null
        rc=$?
    fi
    dt=$(elapsed "$start")
    tail -n 12 "$log" | sed 's/^/   | /'
    { printf '\n===== %s: exit %d in %s s (timeout %d s)\n$ %s\n' "$name" "$rc" "$dt" "$t" "$*"; cat "$log"; } >>"$LOG"
    printf '%s\t%d\t%s\t%d\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$t" "$output" "$log" "$*" >>"$STEPS_TSV"
    write_summary
    printf -- '-- %s: exit %d in %s s%s\n' "$name" "$rc" "$dt" "$( ((rc == 124 || rc == 137)) && echo ' (TIMED OUT)')"
}

CKPT=$WORK/random_ffhq_shape.safetensors
# The GPU commands (run on the GPU, flag-checked by preflight in both modes).
PARITY_GPU=(-m benchmarks.gpu_parity --device cuda --generators demo ffhq-shapes --resolutions 256 512 1024
            --batch 4 --out "$OUT_DIR/parity.json")
SYNTH_GPU=(-m benchmarks.synthesis --device cuda --generator ffhq-shapes --resolutions 256 512 1024
           --batches 1 8 32 --dtypes float32 float16 --warmup 3 --repeats 20 --cell-seconds 1.5 --no-plot
           --out-dir "$OUT_DIR/synthesis")
GRAPHS_GPU=(-m benchmarks.synthesis --device cuda --generator ffhq-shapes --resolutions 256 512 1024
            --batches 1 8 32 --dtypes float16 --channels-last --cuda-graphs --warmup 3 --repeats 20
            --cell-seconds 1.5 --no-plot --out-dir "$OUT_DIR/synthesis_graphs")
CKPT_GPU=(-m benchmarks.gpu_parity --write-checkpoint "$CKPT" --resolution 512)
SESSIONS_GPU=(-m benchmarks.sessions --generator "$CKPT" --device cuda --backend auto --no-discover --fps 25
              --seconds 3 --max-sessions 32 --no-plot --out-dir "$OUT_DIR")
LOOPBACK_GPU=(-m benchmarks.loopback --device cuda --seconds 8 --bursts 5 --out "$OUT_DIR/loopback.json")

CMDS=$WORK/gpu_commands.tsv
for cmd in PARITY_GPU SYNTH_GPU GRAPHS_GPU CKPT_GPU SESSIONS_GPU LOOPBACK_GPU; do
    declare -n c=$cmd
    flags=()
    for a in "${c[@]:2}"; do [[ $a == --* ]] && flags+=("$a"); done
    printf '%s\t%s\n' "${c[1]}" "${flags[*]}" >>"$CMDS"
    unset -n c
done

if [[ $DRY == 1 ]]; then
    TINY=(--channel-max 16 --z-dim 16 --mapping-layers 2)
    PARITY=(-m benchmarks.gpu_parity --device cpu --generators demo ffhq-shapes --resolutions 32 --channel-max 32
            --z-dim 32 --mapping-layers 2 --batch 2 --threads 1 --out "$OUT_DIR/parity.json")
    SYNTH=(-m benchmarks.synthesis --device cpu --resolutions 16 --batches 1 2 --dtypes float32 bfloat16 "${TINY[@]}"
           --warmup 1 --repeats 2 --cell-seconds 1 --threads 1 --no-malloc-tuning --no-plot
           --out-dir "$OUT_DIR/synthesis")
    # CUDA graphs and float16 need CUDA: the CPU stand-in is bfloat16 + channels_last
    GRAPHS=(-m benchmarks.synthesis --device cpu --resolutions 16 --batches 1 2 --dtypes bfloat16 --channels-last
            "${TINY[@]}" --warmup 1 --repeats 2 --cell-seconds 1 --threads 1 --no-malloc-tuning --no-plot
            --out-dir "$OUT_DIR/synthesis_graphs")
    CKPT_CMD=(-m benchmarks.gpu_parity --write-checkpoint "$CKPT" --resolution 32 --channel-max 32 --z-dim 32
              --mapping-layers 2)
    SESSIONS=(-m benchmarks.sessions --generator "$CKPT" --device cpu --backend torch --no-discover --seconds 0.5
              --max-sessions 2 --max-drop 1.0 --threads 1 --no-plot --out-dir "$OUT_DIR")
    LOOPBACK=(-m benchmarks.loopback --device cpu --seconds 3 --bursts 2 --out "$OUT_DIR/loopback.json")
    B_INSTALL=60 B_PREFLIGHT=60 B_PARITY=40 B_SYNTH=30 B_GRAPHS=30 B_CKPT=20 B_SESSIONS=40 B_LOOPBACK=70
else
    PARITY=("${PARITY_GPU[@]}") SYNTH=("${SYNTH_GPU[@]}") GRAPHS=("${GRAPHS_GPU[@]}") CKPT_CMD=("${CKPT_GPU[@]}")
    SESSIONS=("${SESSIONS_GPU[@]}") LOOPBACK=("${LOOPBACK_GPU[@]}")
    B_INSTALL=150 B_PREFLIGHT=30 B_PARITY=60 B_SYNTH=90 B_GRAPHS=60 B_CKPT=30 B_SESSIONS=100 B_LOOPBACK=80
fi

echo "gpu_check: $([[ $DRY == 1 ]] && echo 'DRY RUN on the CPU' || echo 'GPU run'), python $PY, out $OUT_DIR," \
     "deadline $DEADLINE s, work $WORK"
step install "$B_INSTALL" "" -- bash "$SCRIPT" __install
step preflight "$B_PREFLIGHT" preflight.json -- bash "$SCRIPT" __preflight "$OUT_DIR/preflight.json" "$CMDS"
step parity "$B_PARITY" parity.json -- "$PY" "${PARITY[@]}"
step synthesis "$B_SYNTH" synthesis/synthesis.json -- "$PY" "${SYNTH[@]}"
step synthesis_graphs "$B_GRAPHS" synthesis_graphs/synthesis.json -- "$PY" "${GRAPHS[@]}"
step checkpoint "$B_CKPT" "$CKPT" -- "$PY" "${CKPT_CMD[@]}"
step sessions "$B_SESSIONS" sessions.json -- "$PY" "${SESSIONS[@]}"
step loopback "$B_LOOPBACK" loopback.json -- "$PY" "${LOOPBACK[@]}"

write_summary
echo
echo "== summary ($(elapsed "$T0") s in all; $SUMMARY)"
"$PY" - "$SUMMARY" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[1], encoding="utf-8"))
for s in rep["steps"]:
    flag = "ok" if s["exit_code"] == 0 and s["output_ok"] else ("TIMED OUT" if s["timed_out"] else "FAILED")
    print(f"  {s['name']:<17} exit {s['exit_code']:>3}  {s['seconds']:6.1f} s / {s['timeout_s']:>3} s  "
          f"{flag:<9} {s['output'] or ''}")
print("all steps ok" if rep["all_ok"] else "SOME STEPS FAILED")
sys.exit(0 if rep["all_ok"] else 1)
EOF
