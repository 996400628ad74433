// Mux Data for a Mux stream's watch and embed pages: only when the server gives a Mux Data environment key
// (config.mux_data, from [mux] data_env_key), load the vendored mux-embed and monitor our player, so Mux Data's
// current-concurrent-viewers (read back by mediaserver/platform_viewers.py) counts this viewer too. Every other
// page loads nothing more than this file.
(function () {
  'use strict';
  const element = document.getElementById('player-config');
  if (!element) return;
  let config;
  try { config = JSON.parse(element.textContent); } catch (e) { return; }
  const data = config && config.mux_data;
  if (!data || !data.env_key) return;
  const initTime = Date.now();

  function monitor() {
    const video = document.getElementById('video');
    if (!window.mux || !video) return;
    const player = window.player || {};
    const options = {
      debug: false,
      data: {
        env_key: data.env_key,
        player_name: 'mediaserver',
        player_init_time: initTime,
        video_id: config.stream_id,        // our stream id: [mux] data_filter = video_id or video_series finds it
        video_series: config.stream_id,
        video_title: config.title || '',
        video_stream_type: 'live',
      },
    };
    if (data.beacon_domain) options.beaconCollectionDomain = data.beacon_domain;
    if (player.hls && window.Hls) { options.hlsjs = player.hls; options.Hls = window.Hls; }
    window.mux.monitor(video, options);
  }

  const script = document.createElement('script');
  script.src = '/static/vendor/mux-embed.min.js';
  script.onload = monitor;
  document.head.appendChild(script);
})();
