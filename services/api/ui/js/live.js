// Live events: server-sent events read with a streaming fetch, so the token goes in a header,
// never in a URL. Reconnects forever with jittered backoff; says when it is live.

export function connectLive(token, { onEvent, onState }) {
  let stopped = false;
  let controller = null;

  async function run() {
    let delay = 1000;
    while (!stopped) {
      controller = new AbortController();
      onState("connecting");
      try {
        const res = await fetch("/api/v1/events/stream", {
          headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
          signal: controller.signal,
          cache: "no-store",
        });
        if (res.status === 401) {
          onState("unauthorized");
          return;
        }
        if (!res.ok || !res.body) throw new Error(`event stream: ${res.status}`);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const parsed = parse(block);
            if (!parsed) continue;
            if (parsed.kind === "ready") {
              delay = 1000;
              onState("live");
            }
            onEvent(parsed.kind, parsed.data);
          }
        }
      } catch (err) {
        if (stopped) return;
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, delay * (0.75 + Math.random() * 0.5)));
      delay = Math.min(delay * 2, 15000);
    }
  }

  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}

function parse(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { kind, data: JSON.parse(data.join("\n")) };
  } catch {
    return { kind, data: null };
  }
}
