#!/bin/sh
# Runs inside the fresh rootfs (chroot) before it is imported: a non-root user for the server
# (it owns nothing under /opt: the server only reads it) and no apt caches or documentation.
set -eu
groupadd --system --gid 10002 triton
useradd --system --uid 10002 --gid 10002 --home-dir /home/triton --create-home \
  --shell /usr/sbin/nologin triton
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/*.log \
  /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
: > /etc/machine-id
