#!/bin/sh
# Runs inside the fresh rootfs (chroot) before it is imported: a non-root user for the server,
# and nothing the server does not need (apt caches, documentation, the other llama.cpp tools).
set -eu
groupadd --system --gid 10001 llama
useradd --system --uid 10001 --gid 10001 --home-dir /home/llama --create-home \
  --shell /usr/sbin/nologin llama
for tool in /usr/bin/llama-*; do
  case "$tool" in /usr/bin/llama-server) ;; *) rm -f "$tool" ;; esac
done
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/*.log \
  /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
: > /etc/machine-id
