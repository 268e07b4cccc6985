// Parses Adaptive Cards with Microsoft's `adaptivecards` library (npm) and prints every parse and
// validation event it reports, as the Teams clients' renderer would see them.
// Input (stdin): a JSON array of Adaptive Card objects. Output (stdout): a JSON array, one entry per card:
// [{"phase": "Parse" | "Validation", "event": "<ValidationEvent name>", "message": "..."}, ...].
// The package's `lib` build is ES modules that Node 20 cannot `require`, so its UMD `dist` build is loaded.
"use strict";
const path = require("path");

const root = process.env.CARD_CHECK_NODE_MODULES || path.resolve(__dirname, "..", "..", "node_modules");
const AC = require(path.join(root, "adaptivecards", "dist", "adaptivecards.js"));

function eventsOf(cardJson) {
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  card.parse(cardJson, context);
  const events = [];
  for (let i = 0; i < context.eventCount; i++) {
    events.push(context.getEventAt(i));
  }
  events.push(...card.validateProperties().validationEvents);
  return events.map((e) => ({
    phase: AC.ValidationPhase[e.phase],
    event: AC.ValidationEvent[e.event],
    message: e.message,
  }));
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const cards = JSON.parse(input);
  process.stdout.write(JSON.stringify(cards.map(eventsOf)));
});
