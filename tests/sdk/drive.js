// Drives Adobe's Customer Data API SDK, unmodified, against a server of our choosing, for
// tests/it/customer_data_sdk.rs. Input, as JSON on stdin (or as the first argument):
//   {base, token, org, steps: [step, ...]}
// where a step is one of
//   {call: "updateStream", streamId, body}
//   {call: "updateProfile", streamId, params, body?}   (body: the SDK's POST; else its GET)
//   {call: "getProfile", dataSourceId, id}
// and may carry its own `token` or `org`. Prints one JSON line per step:
//   {"step": i, "ok": true, "status": <HTTP status>, "body": <parsed body>}
//   {"step": i, "ok": false, "error": "<message>"}
// The only change to the SDK is its server URL, set on the spec it loads.
'use strict'

const fs = require('fs')
const SDK = '@adobe/aio-lib-audience-manager-cd'

async function main () {
  const input = JSON.parse(process.argv[2] || fs.readFileSync(0, 'utf8'))
  require(`${SDK}/spec/api.json`).servers = [{ url: input.base }]
  const clients = new Map()
  const client = (org, token) => {
    const key = JSON.stringify([org, token])
    if (!clients.has(key)) clients.set(key, require(SDK).init(org, 'tributary-test', token))
    return clients.get(key)
  }
  for (const [i, s] of input.steps.entries()) {
    let line
    try {
      const sdk = await client(s.org || input.org, s.token || input.token)
      const r = await (s.call === 'updateStream'
        ? sdk.updateStream(s.streamId, s.body)
        : s.call === 'updateProfile'
          ? sdk.updateProfile(s.streamId, s.params, s.body)
          : s.call === 'getProfile'
            ? sdk.getProfile(s.dataSourceId, s.id)
            : Promise.reject(new Error(`unknown call ${s.call}`)))
      line = { step: i, ok: true, status: r.status, body: r.body }
    } catch (e) {
      line = { step: i, ok: false, error: String((e && e.message) || e) }
    }
    process.stdout.write(JSON.stringify(line) + '\n')
  }
}

main().catch(e => {
  process.stderr.write(`drive.js: ${e.stack || e}\n`)
  process.exit(1)
})
