#!/bin/sh
# expect_fail.sh PATTERN COUNT COMMAND...: passes when COMMAND exits non-zero and its output (stdout and
# stderr) holds exactly COUNT lines matching the grep pattern PATTERN (the one-line error, printed once);
# COUNT+ means at least COUNT.
pattern=$1 count=$2
shift 2
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
n=$(printf '%s\n' "$out" | grep -c -e "$pattern")
echo "expect_fail: exit status $rc (expected non-zero), $n line(s) matching '$pattern' (expected $count)"
case $count in
    *+) [ "$rc" -ne 0 ] && [ "$n" -ge "${count%+}" ] ;;
    *) [ "$rc" -ne 0 ] && [ "$n" -eq "$count" ] ;;
esac
