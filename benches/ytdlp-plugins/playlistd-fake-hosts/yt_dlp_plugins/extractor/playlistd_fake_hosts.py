"""Sends yt-dlp's requests for SoundCloud's hosts to playlistd's fake server.

Benchmark B6 only (`benches/sync.rs`). yt-dlp's SoundCloud extractor has its hosts hard-coded,
so to compare it with playlistd's own client on the same data, this plugin changes nothing but
the transport: every request the extractor makes is still made, in the same order, to the
fake instead of the real host. It is loaded with `--plugin-dirs` and does nothing unless
PLAYLISTD_FAKE_HOSTS is set, e.g.

    PLAYLISTD_FAKE_HOSTS="soundcloud.com=http://127.0.0.1:1234,api-v2.soundcloud.com=http://127.0.0.1:5678"
"""

import os
import urllib.parse

from yt_dlp import YoutubeDL
from yt_dlp.networking import Request

_HOSTS = dict(
    pair.split('=', 1)
    for pair in os.environ.get('PLAYLISTD_FAKE_HOSTS', '').split(',')
    if '=' in pair
)


def _redirect(url):
    parts = urllib.parse.urlsplit(url)
    target = _HOSTS.get(parts.hostname or '')
    if not target:
        return url
    to = urllib.parse.urlsplit(target)
    return urllib.parse.urlunsplit((to.scheme, to.netloc, parts.path, parts.query, parts.fragment))


_urlopen = YoutubeDL.urlopen


def _urlopen_redirected(self, req):
    if isinstance(req, str):
        req = Request(req)
    if isinstance(req, Request):
        req.url = _redirect(req.url)
    return _urlopen(self, req)


if _HOSTS:
    YoutubeDL.urlopen = _urlopen_redirected
