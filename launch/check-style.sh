#!/usr/bin/env bash
# The house rules a compiler can check (issue 10), run by CI before the tests
# (launch/quickstart.sh --tests). Three checks over the C++ of common ps scheduler worker launch
# tests (never build/):
#
#   format   clang-format with the checked-in .clang-format (`--dry-run --Werror`). Enforced
#            (a violation fails) only under the paths given with --enforce or in
#            $M6REC_FORMAT_ENFORCED (space-separated; "." = everything); elsewhere reported as a
#            count of files and lines. --fix formats every file in place instead.
#   threads  clang's thread-safety analysis: every translation unit of the build's
#            compile_commands.json that includes common/thread_annotations.h (directly or through
#            the project's headers, e.g. common/mutex.h) is parsed with `clang++ -fsyntax-only
#            -Wthread-safety -Werror=thread-safety` and the flags the build uses, so a guarded
#            member touched without its lock fails. Always enforced. Never parsed: the LibTorch TUs
#            worker/model.cc, worker/m6_model.cc and tests/model_test.cc (~20 s and ~1 GB of
#            compiler memory each; they hold no mutex of ours), and generated sources in the
#            build directory. (Other TUs carry no annotation, so the analysis has nothing there.)
#   mutex    no std::mutex, std::condition_variable or std lock type outside common/mutex.h: the
#            analysis cannot see them, so guarded state must use Mutex / MutexLock / CondVar.
#            Always enforced. (Allowed: worker/m6_model.cc locking LibTorch's generator mutex,
#            which the library hands out as a std::mutex.)
#
# usage: launch/check-style.sh [--enforce PATH]... [--build DIR] [-j N] [--only CHECK] [--fix]
#   --enforce PATH  fail on formatting under PATH (a directory or file; repeatable; "." = all)
#   --build DIR     where compile_commands.json is (default build; configure first)
#   -j N            parallel compiler processes (default: nproc)
#   --only CHECK    run one check: format, threads or mutex
#   --fix           clang-format every file in place, then stop (no other check)
# Needs clang++ and clang-format (14, Debian 12's `clang` and `clang-format`: launch/install-deps.sh
# --with-checks) and python3. Exit status 0 iff every enforced check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=(common ps scheduler worker launch tests)
build=build
jobs=$(nproc 2>/dev/null || echo 2)
only=""
fix=0
read -r -a enforced <<<"${M6REC_FORMAT_ENFORCED:-}"
while (($#)); do
  case "$1" in
    --enforce) enforced+=("${2:?--enforce needs a path}"); shift 2 ;;
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    -j) jobs=${2:?-j needs a number}; shift 2 ;;
    --only) only=${2:?--only needs format, threads or mutex}; shift 2 ;;
    --fix) fix=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "check-style: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in "" | format | threads | mutex) ;; *) echo "check-style: --only format|threads|mutex" >&2; exit 2 ;; esac
for p in "${enforced[@]}"; do
  [[ -e "$p" ]] || { echo "check-style: enforced path '$p' does not exist" >&2; exit 2; }
done

# clang-format's output differs between major versions: prefer the one CI installs.
clang_format=${CLANG_FORMAT:-$(command -v clang-format-14 || command -v clang-format || true)}
clangxx=${CLANGXX:-$(command -v clang++-14 || command -v clang++ || true)}

mapfile -t files < <(find "${dirs[@]}" -type f \( -name '*.h' -o -name '*.cc' -o -name '*.hpp' \
  -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) | LC_ALL=C sort)

if ((fix)); then
  [[ -n "$clang_format" ]] || { echo "check-style: clang-format not found" >&2; exit 2; }
  "$clang_format" --style=file -i "${files[@]}"
  echo "check-style: formatted ${#files[@]} files in place with $("$clang_format" --version)"
  exit 0
fi

failed=()

# True if $1 lies under one of the enforced paths.
is_enforced() {
  local f=$1 p
  for p in "${enforced[@]}"; do
    p=${p%/}
    p=${p#./}
    if [[ "$p" == "." || "$f" == "$p" || "$f" == "$p"/* ]]; then return 0; fi
  done
  return 1
}

check_format() {
  if [[ -z "$clang_format" ]]; then
    echo "format: clang-format not found (launch/install-deps.sh --with-checks)"
    failed+=(format)
    return
  fi
  local t0=$SECONDS f diff_out del add n_files=0 n_del=0 n_add=0 n_bad_enforced=0
  for f in "${files[@]}"; do
    diff_out=$("$clang_format" --style=file "$f" | diff -U0 "$f" - || true)
    [[ -z "$diff_out" ]] && continue
    n_files=$((n_files + 1))
    read -r del add < <(awk 'NR > 2 && /^-/ {d++} NR > 2 && /^\+/ {a++} END {print d + 0, a + 0}' \
      <<<"$diff_out")
    n_del=$((n_del + del))
    n_add=$((n_add + add))
    if is_enforced "$f"; then
      n_bad_enforced=$((n_bad_enforced + 1))
      "$clang_format" --style=file --dry-run --Werror "$f" 2>&1 | head -20 || true
    fi
  done
  echo "format: $n_files of ${#files[@]} files would change ($n_del lines removed, $n_add added;" \
    "$("$clang_format" --version | sed 's/.*version \([0-9.]*\).*/clang-format \1/'), $((SECONDS - t0)) s)"
  if ((${#enforced[@]} == 0)); then
    echo "format: report only (no path enforced; --enforce PATH or M6REC_FORMAT_ENFORCED)"
  elif ((n_bad_enforced > 0)); then
    echo "format: FAILED: $n_bad_enforced files under enforced paths (${enforced[*]}) are not" \
      "clang-formatted; run launch/check-style.sh --fix (or clang-format -i FILE)"
    failed+=(format)
  else
    echo "format: ok under the enforced paths (${enforced[*]})"
  fi
}

check_threads() {
  if [[ -z "$clangxx" ]]; then
    echo "threads: clang++ not found (launch/install-deps.sh --with-checks)"
    failed+=(threads)
    return
  fi
  if ! command -v python3 >/dev/null; then
    echo "threads: python3 not found (it reads compile_commands.json; install-deps.sh --with-checks)"
    failed+=(threads)
    return
  fi
  if [[ ! -f "$build/compile_commands.json" ]]; then
    echo "threads: no $build/compile_commands.json: configure first (cmake -S . -B $build)"
    failed+=(threads)
    return
  fi
  if ! CLANGXX="$clangxx" JOBS="$jobs" python3 - "$build/compile_commands.json" "$PWD" "$build" <<'EOF'
import concurrent.futures, json, os, re, shlex, subprocess, sys, time

db, root, build = sys.argv[1], os.path.realpath(sys.argv[2]), os.path.realpath(sys.argv[3])
# LibTorch translation units: ~20 s and ~1 GB of compiler memory each, and no mutex of ours.
SKIP = {"worker/model.cc", "worker/m6_model.cc", "tests/model_test.cc"}
FLAGS = ["-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety"]
ANNOTATIONS = os.path.join(root, "common", "thread_annotations.h")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
direct = {}  # file -> the project files it #includes "..." (from the root or its folder)

def project_includes(path):
    if path not in direct:
        try:
            text = open(path, errors="replace").read()
        except OSError:
            text = ""
        found = []
        for inc in INCLUDE.findall(text):
            for base in (root, os.path.dirname(path)):
                cand = os.path.realpath(os.path.join(base, inc))
                if os.path.isfile(cand):
                    found.append(cand)
                    break
        direct[path] = found
    return direct[path]

def includes_annotations(path):
    """Whether `path` reaches common/thread_annotations.h through project headers (#if ignored)."""
    seen, todo = {path}, [path]
    while todo:
        for inc in project_includes(todo.pop()):
            if inc == ANNOTATIONS:
                return True
            if inc not in seen:
                seen.add(inc)
                todo.append(inc)
    return False

units, skipped = [], []
for e in json.load(open(db)):
    path = os.path.realpath(os.path.join(e["directory"], e["file"]))
    rel = os.path.relpath(path, root)
    if rel.startswith("..") or path.startswith(build + os.sep):
        continue  # not ours, or generated
    if not includes_annotations(path):
        continue  # nothing annotated to check
    if rel in SKIP:
        skipped.append(rel)
        continue
    args = shlex.split(e["command"]) if "command" in e else list(e["arguments"])
    out, it = [os.environ["CLANGXX"]], iter(args[1:])
    for a in it:
        if a == "-o":
            next(it, None)  # and its file
        elif a != "-c":
            out.append(a)
    units.append((rel, e["directory"], out + FLAGS))

# First, that the analysis works at all: a snippet reading a guarded member without its lock
# must fail (it would not if the macros expanded to nothing under clang).
SNIPPET = """#include "common/mutex.h"
struct S { m6rec::Mutex mu; int x GUARDED_BY(mu) = 0; };
int Read(S& s) { return s.x; }
"""
r = subprocess.run([os.environ["CLANGXX"], "-std=c++17", "-I", root, "-x", "c++", "-"] + FLAGS,
                   input=SNIPPET, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
if r.returncode == 0 or "requires holding mutex" not in r.stdout:
    print(r.stdout + "threads: FAILED: clang accepted a read of a GUARDED_BY member without its "
          "lock: the annotations are not reaching the analysis (common/thread_annotations.h)")
    sys.exit(1)

def parse(u):
    rel, cwd, cmd = u
    t = time.time()
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return rel, r.returncode, r.stdout, time.time() - t

t0, bad = time.time(), []
with concurrent.futures.ThreadPoolExecutor(max_workers=int(os.environ["JOBS"])) as pool:
    for rel, rc, text, _ in pool.map(parse, units):
        if rc != 0:
            bad.append(rel)
            sys.stdout.write(text)
print(f"threads: {len(units)} translation units include the annotations, parsed with "
      f"-Wthread-safety: {len(bad)} failed ({time.time() - t0:.0f} s): "
      + " ".join(rel for rel, _, _ in units))
if skipped:
    print("threads: not parsed (LibTorch, slow): " + " ".join(skipped))
if bad:
    print("threads: FAILED: " + " ".join(bad))
sys.exit(1 if bad else 0)
EOF
  then
    failed+=(threads)
  fi
}

check_mutex() {
  local hits
  # Code only (a // comment may name the std types); FILE:LINE: text, as grep -n prints.
  hits=$(awk '{ code = $0; sub(/\/\/.*/, "", code) }
    code ~ /std::(mutex|timed_mutex|recursive_mutex|shared_mutex|shared_timed_mutex|condition_variable|condition_variable_any|lock_guard|unique_lock|scoped_lock|shared_lock)([^A-Za-z0-9_]|$)/ {
      print FILENAME ":" FNR ": " $0 }' "${files[@]}" | grep -v '^common/mutex\.h:' |
    grep -vE '^worker/m6_model\.cc:[0-9]+: +std::lock_guard<std::mutex> lock\(gen\.mutex\(\)\);$' || true)
  if [[ -n "$hits" ]]; then
    echo "$hits"
    echo "mutex: FAILED: std mutex types above are invisible to the thread-safety analysis;" \
      "use Mutex, MutexLock and CondVar (common/mutex.h) with GUARDED_BY on what they guard"
    failed+=(mutex)
  else
    echo "mutex: ok (no std mutex types outside common/mutex.h)"
  fi
}

if [[ -z "$only" || "$only" == format ]]; then check_format; fi
if [[ -z "$only" || "$only" == mutex ]]; then check_mutex; fi
if [[ -z "$only" || "$only" == threads ]]; then check_threads; fi

if ((${#failed[@]})); then
  echo "check-style: FAILED: ${failed[*]}"
  exit 1
fi
echo "check-style: ok"
