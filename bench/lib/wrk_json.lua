-- wrk script of bench/run (shape 6): prints one JSON line at the end.
done = function(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"errors":%d,"non2xx":%d,' ..
      '"lat_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f}}\n',
      summary.requests, secs, summary.requests / secs,
      e.connect + e.read + e.write + e.timeout, e.status,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000))
end
