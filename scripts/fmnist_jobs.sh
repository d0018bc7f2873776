# Sourced by scripts/fmnist_table.sh and scripts/fmnist_gpu.sh: the table's job files, varied.

# job_iters JOB: the max_iter of job file JOB
job_iters() { sed -n 's/.*max_iter: *\([0-9][0-9]*\).*/\1/p' "$1" | head -1; }

# job_variant SRC DEST NAME OUT_DIR MAX_ITER [seed=S] [weights=W] [test_iter=N] [display=N]: writes
# DEST, the job SRC with another name, output_dir and max_iter, and the other fields given. The
# fields are matched as configs/job_fmnist_*.prototxt write them (weights: the teacher's line).
job_variant() {
  local src="$1" dest="$2" kv args=()
  args=(-e "s|^name: .*|name: \"$3\"|" -e "s|^output_dir: \"[^\"]*\"|output_dir: \"$4\"|"
    -e "s|max_iter: *[0-9][0-9]*|max_iter: $5|")
  shift 5
  for kv in "$@"; do
    case "$kv" in
      seed=*) args+=(-e "s|^seed: .*|seed: ${kv#seed=}|") ;;
      weights=*) args+=(-e "s|^  weights: .*|  weights: \"${kv#weights=}\"|") ;;
      test_iter=*) args+=(-e "s|test_iter: *[0-9][0-9]*|test_iter: ${kv#test_iter=}|") ;;
      display=*) args+=(-e "s|display: *[0-9][0-9]*|display: ${kv#display=}|") ;;
      *) echo "job_variant: unknown field $kv" >&2; return 2 ;;
    esac
  done
  sed "${args[@]}" "$src" > "$dest"
}
