// NOWPayments' IPN signing recipe, as their Node.js docs give it: sort the keys recursively,
// JSON.stringify, HMAC-SHA512 with the IPN secret. Reads one JSON request per line on stdin:
// {"secret": "...", "body": "<raw JSON text>"}; writes {"canonical": "...", "signature": "..."}.
"use strict";
const crypto = require("crypto");
const readline = require("readline");

function sortObject(obj) {
  return Object.keys(obj)
    .sort()
    .reduce((result, key) => {
      result[key] = obj[key] && typeof obj[key] === "object" ? sortObject(obj[key]) : obj[key];
      return result;
    }, {});
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const request = JSON.parse(line);
  const canonical = JSON.stringify(sortObject(JSON.parse(request.body)));
  const signature = crypto.createHmac("sha512", request.secret).update(canonical).digest("hex");
  process.stdout.write(JSON.stringify({ canonical, signature }) + "\n");
});
