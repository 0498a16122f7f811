#!/bin/sh
# nightly.sh: run tonight's campaign, compare it with the baseline, and make tonight the
# baseline only when the campaign ran to its end and the report found no regression.
#
#   PAGERACE_ROOT=/var/lib/pagerace PLAN=nightly.toml tools/nightly.sh
#
# NIGHT names tonight's directory (default: the date); PAGERACE is the command to run
# (default: pagerace). Exit: 0 quiet night, 1 regression (the baseline stays), 2 bad input
# or a refusal (nothing compared), 3 internal error, 130 interrupted. The baseline is
# never moved to a night whose campaign or report did not end well.
set -u
root=${PAGERACE_ROOT:-/var/lib/pagerace}
plan=${PLAN:-nightly.toml}
night=${NIGHT:-$(date +%F)}
pagerace=${PAGERACE:-pagerace}
tonight=$root/$night
base=$root/baseline

say() { printf 'nightly: %s\n' "$*" >&2; }

if [ -L "$base" ] && [ ! -d "$base" ]; then
    say "baseline $base points to $(readlink "$base"), which does not exist; point it at a night you trust"
    exit 2
fi
if [ -d "$base" ] && [ -d "$tonight" ] && [ "$(cd "$base" && pwd -P)" = "$(cd "$tonight" && pwd -P)" ]; then
    say "the baseline is tonight's directory $tonight already (a second run tonight?):" \
        "not comparing a night with itself; set NIGHT to run again under another name"
    exit 2
fi

$pagerace campaign --plan "$plan" --out "$tonight" --quiet
status=$?                       # 0 clean, 1 some runs failed: both ran to the end
case $status in
    0|1) ;;
    *) say "campaign exited $status; the baseline stays where it was"; exit "$status" ;;
esac

if [ -d "$base" ]; then
    $pagerace report "$tonight" --baseline "$base" --html > "$tonight/report.txt"
else
    say "no baseline yet: tonight's report compares with nothing"
    $pagerace report "$tonight" --html > "$tonight/report.txt"
fi
status=$?
case $status in
    0) ln -sfn "$tonight" "$base.new" && mv -T "$base.new" "$base" && say "the baseline is now $tonight" ;;
    1) say "regression against $base; the baseline stays (move it on purpose once the change is understood)" ;;
    *) say "report exited $status; the baseline stays where it was" ;;
esac
exit "$status"
