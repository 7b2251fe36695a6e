#!/bin/sh
# Runs inside the fresh rootfs (chroot) before it is imported: a non-root user for the front door,
# the Python files compiled once (the container's root filesystem is read-only), and no apt caches
# or documentation.
set -eu
groupadd --system --gid 10003 frontdoor
useradd --system --uid 10003 --gid 10003 --home-dir /nonexistent --no-create-home \
  --shell /usr/sbin/nologin frontdoor
python3 -m compileall -q /opt/frontdoor/lib
python3 -c 'import sys; sys.path.insert(0, "/opt/frontdoor/lib"); import hearth.frontdoor.app'
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/*.log \
  /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
: > /etc/machine-id
