#!/bin/sh
# apt-install-quiet.sh PACKAGE...: Debian packages for the tests' own use, with no service of
# theirs started on the machine (sshd on port 22, nginx on port 80: a package's postinst starts
# its service through invoke-rc.d, which a policy-rc.d answering 101 refuses). The policy file
# is removed afterwards if it was this script's.
set -eu
ours=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  ours=1
fi
status=0
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || status=$?
[ -z "$ours" ] || rm -f /usr/sbin/policy-rc.d
exit $status
