// Drives the Lesion Search UI in a real headless Chromium, step by step, saving a
// screenshot of each step. Run by web/tests/browser.rs, which starts the server:
//   node ui.mjs --base http://127.0.0.1:PORT --dicom FILE --out DIR [--chromium /usr/bin/chromium]
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const base = args.base;
const out = args.out;
mkdirSync(out, { recursive: true });

function check(condition, message) {
  if (!condition) throw new Error(`UI check failed: ${message}`);
}

// One CSV file as records of cells (RFC 4180 quoting); records starting with `#` are the
// provenance, as pandas' comment="#" reads them.
function parseCsv(text) {
  const provenance = {}, records = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] === "#") {
      const end = text.indexOf("\n", i);
      const line = text.slice(i + 1, end < 0 ? text.length : end).trim();
      const colon = line.indexOf(": ");
      if (colon > 0) provenance[line.slice(0, colon)] = JSON.parse(line.slice(colon + 2));
      i = end < 0 ? text.length : end + 1;
      continue;
    }
    const cells = [""];
    let quoted = false;
    for (; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') { cells[cells.length - 1] += '"'; i++; }
        else if (c === '"') quoted = false;
        else cells[cells.length - 1] += c;
      } else if (c === '"' && cells[cells.length - 1] === "") quoted = true;
      else if (c === ",") cells.push("");
      else if (c === "\n") { i++; break; }
      else cells[cells.length - 1] += c;
    }
    records.push(cells);
  }
  const [header, ...rows] = records;
  return { provenance, header, rows, column: (name) => rows.map((r) => r[header.indexOf(name)]) };
}

// The number a count text starts with ("1,234 patients" -> 1234).
const countOf = (text) => Number((text.match(/^[\d,]+/) || ["NaN"])[0].replace(/,/g, ""));

const browser = await chromium.launch({
  executablePath: args.chromium || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
let step = 0;
const shot = async (name) => {
  step += 1;
  const file = join(out, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`step ${step}: ${name} (${file})`);
};
const cards = () => page.locator("#grid .card");
const waitIdle = async () => page.waitForFunction(() => document.getElementById("busy").hidden, null, { timeout: 30000 });

try {
  // 1. The page loads from the server alone and shows the archive.
  await page.goto(base);
  if (args.key) {
    // The server wants a key: the page asks for it once and keeps it for the tab.
    await page.waitForSelector("#key-dialog[open]", { timeout: 30000 });
    await shot("key-asked");
    await page.fill("#key-input", args.key);
    await page.click("#key-form button[type=submit]");
  }
  await page.waitForFunction(() => /lesions/.test(document.getElementById("archive-status").textContent));
  check(!(await page.evaluate(() => document.getElementById("key-dialog").open)), "the key is asked once");
  await shot("start");

  // 2. Open a real DICOM slice, choose the lung window, draw a box.
  await page.setInputFiles("#file", args.dicom);
  await page.waitForFunction(() => document.getElementById("viewer-empty").hidden, null, { timeout: 30000 });
  await waitIdle();
  await page.click("#query .windows button[data-window=lung]");
  check((await page.getAttribute("#query .windows button[data-window=lung]", "aria-pressed")) === "true", "the lung preset is selected");
  const viewer = await page.locator("#viewer").boundingBox();
  const at = (fx, fy) => [viewer.x + viewer.width * fx, viewer.y + viewer.height * fy];
  await page.mouse.move(...at(0.55, 0.42));
  await page.mouse.down();
  await page.mouse.move(...at(0.62, 0.48), { steps: 5 });
  await page.mouse.up();
  const boxText = await page.textContent("#box-readout");
  check(/Box: \d/.test(boxText), `a box was drawn (${boxText})`);
  // Window/level by shift-drag.
  const before = await page.textContent("#wl-readout");
  await page.keyboard.down("Shift");
  await page.mouse.move(...at(0.2, 0.8));
  await page.mouse.down();
  await page.mouse.move(...at(0.25, 0.75), { steps: 4 });
  await page.mouse.up();
  await page.keyboard.up("Shift");
  check((await page.textContent("#wl-readout")) !== before, "shift-drag changes window and level");
  await page.click("#query .windows button[data-window=lung]");
  await shot("dicom-with-box");

  // 3. Search by image: results with thumbnails, badges, which signal matched.
  await page.click("#search");
  await cards().first().waitFor({ timeout: 30000 });
  await waitIdle();
  const n = await cards().count();
  check(n > 0, "image search returns results");
  check((await page.locator("#grid .card .match-image").count()) === n, "every hit matched by image");
  check(!(await page.isHidden("#suggestion")), "a type suggestion is shown");
  check(page.url().includes("upload=") && page.url().includes("box="), "the URL holds the query");
  check(!(await page.isHidden("#search-outlook")), "the outlook of similar lesions is shown for an image query");
  check(/real follow-up pairs/.test(await page.textContent("#search-outlook .statement")), "the outlook states its measurement on real pairs");
  await page.waitForFunction(() => [...document.querySelectorAll("#grid img")].slice(0, 4).every((i) => i.complete && i.naturalWidth > 0));
  await shot("image-results");

  // 4. Detail: side by side, report, follow-ups.
  await cards().first().locator("[data-act=detail]").click();
  await page.waitForSelector("#detail[open]");
  await waitIdle();
  check((await page.textContent("#detail-report")).length > 0, "the report is shown");
  check((await page.locator("#detail-meta dt").count()) >= 5, "metadata is shown");
  await page.click("#detail-windows button[data-window=soft]");
  await shot("detail");

  // 4b. Follow-ups: a lesion seen in another study, its candidates with their confidence;
  // picking another candidate redraws the chart; the outlook shows its evidence.
  const followed = await page.evaluate(async () => {
    const key = sessionStorage.getItem("lesion-search-key");
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    for (let id = 0; id < 300; id++) {
      const r = await fetch(`/api/lesions/${id}/followups`, { headers });
      if (!r.ok) continue;
      const f = await r.json();
      const study = f.studies.find((s) => !s.same_study && s.matched != null && s.candidates.length > 1);
      if (study) return { id, study: study.study, other: study.candidates.find((c) => c.id !== study.matched).id };
    }
    return null;
  });
  check(followed !== null, "the archive has a lesion matched in another study among several candidates");
  await page.evaluate((id) => openDetail(id), followed.id);
  await page.waitForSelector(`#detail-followups li[data-study="${followed.study}"] select`);
  await waitIdle();
  const pick = `#detail-followups li[data-study="${followed.study}"] select`;
  check(/\d+%/.test(await page.textContent(pick)), "candidates show their probability");
  const chartBefore = await page.textContent("#detail-followups .fu-chart");
  check(/study \d+ \(\d+%\)/.test(chartBefore), "the chart shows the match's confidence");
  await page.selectOption(pick, String(followed.other));
  check((await page.textContent("#detail-followups .fu-chart")) !== chartBefore, "picking another candidate redraws the chart");
  await page.selectOption(pick, "");
  check(!/study \d+ \(\d+%\)/.test(await page.textContent("#detail-followups .fu-chart")) || (await page.locator("#detail-followups li").count()) > 1,
    "\"not in this study\" takes the study off the chart");
  check(/real follow-up pairs/.test(await page.textContent("#detail-outlook .statement")), "the outlook panel states its measurement");
  await shot("followups-and-outlook");

  // 5. Pivot: more like this result.
  const pivotKey = (await page.textContent("#detail-title")).split(" · ")[0];
  await page.click("#detail-more");
  await page.waitForFunction(() => !document.getElementById("detail").open);
  await page.waitForFunction(() => new URLSearchParams(location.search).has("lesion"), null, { timeout: 30000 });
  await waitIdle();
  check((await cards().count()) > 0, "more like this returns results");
  check((await page.inputValue("#pick")) === pivotKey, "the pivot lesion is the query");
  await shot("pivot");
  const pivotUrl = page.url();

  // 6. Refine: thumbs up on a result re-runs the query with it.
  await cards().nth(1).locator("[data-act=like]").click();
  await page.waitForSelector("#refine .chip.pos");
  await waitIdle();
  check(page.url().includes("pos="), "the liked result is in the URL");
  await shot("refined");
  const refinedUrl = page.url();

  // 7. Research by text with a filter.
  await page.click("#clear");
  await page.fill("#text", "lung nodule");
  await page.check("input[name=type][value=lung]");
  await page.click("#search");
  await page.waitForFunction(() => document.querySelectorAll("#grid .card").length > 0, null, { timeout: 30000 });
  await waitIdle();
  const types = await page.locator("#grid .card .badges .badge:first-child").allTextContents();
  check(types.length > 0 && types.every((t) => t === "lung"), `the type filter holds (${types.join(",")})`);
  check((await page.locator("#grid .card .snippet b").count()) > 0, "matching words are highlighted");
  check(/\(\d+\)/.test(await page.textContent("[data-type=lung]")), "the filter shows its count");
  // The count says in plain words what it counts: patients, one result each, by default.
  const countText = await page.textContent("#count");
  check(/^[\d,]+ patients?( · [\d,]+ lesions? match(es)?)?$/.test(countText), `the count says patients (${countText})`);
  const shown = countOf(countText);
  check(shown >= (await cards().count()), `the count (${shown}) covers the cards shown`);
  // Ticking a type leaves the other types' counts as they would be without it.
  const otherCount = await page.textContent("[data-type=liver]");
  check(/\(\d+\)/.test(otherCount), `another type keeps a count (${otherCount})`);
  // Scrolling to the end loads more without changing the count.
  await page.locator("#more").scrollIntoViewIfNeeded().catch(() => {});
  await waitIdle();
  check((await page.textContent("#count")) === countText, "the count stays while scrolling");
  check(await page.isVisible("#export-note"), "the export note says what an export holds");
  // The server pages no deeper than its max_offset (20 here): the list stops there and says
  // that the export holds the rest.
  for (let i = 0; i < 6 && (await page.isVisible("#more")); i++) {
    await page.click("#more");
    await waitIdle();
  }
  const browsed = await cards().count();
  if (shown > browsed) {
    check(browsed <= 20 + 24, `paging stops past max_offset (${browsed} cards)`);
    check(await page.isVisible("#paging-note"), "the page says the export holds the rest");
  } else {
    check(!(await page.isVisible("#paging-note")), "no paging note when the whole list is shown");
  }
  check((await page.textContent("#count")) === countText, "the count stays while paging");
  await shot("text-filter");

  // 8. Export the result list: CSV and JSON Lines, each the whole list in its order (as many
  // rows as the count says), with the search it came from at the top.
  check((await page.textContent("#export-csv")) === "Export CSV", "the CSV export button");
  check((await page.textContent("#export-jsonl")) === "Export JSON Lines", "the JSON Lines export button");
  const [csvDownload] = await Promise.all([page.waitForEvent("download"), page.click("#export-csv")]);
  check(csvDownload.suggestedFilename() === "lesions.csv", `CSV file name (${csvDownload.suggestedFilename()})`);
  const csvPath = join(out, "export.csv");
  await csvDownload.saveAs(csvPath);
  const csv = parseCsv(readFileSync(csvPath, "utf8"));
  check(csv.header.slice(0, 3).join(",") === "rank,score,matched", `CSV header (${csv.header.slice(0, 3)})`);
  check(["File_name", "Bounding_boxes", "Spacing_mm_px_", "DICOM_windows", "Train_Val_Test"].every((c) => csv.header.includes(c)), "the DeepLesion columns");
  check(csv.rows.length === shown, `the CSV holds the whole list (${csv.rows.length} rows, the count says ${shown})`);
  check(csv.column("rank").every((r, i) => r === String(i + 1)), "ranks 1..n in list order");
  check(csv.column("coarse_type").every((t) => t === "lung"), "exported rows follow the filter");
  check(csv.provenance.text === "lung nodule", `the provenance names the text (${csv.provenance.text})`);
  check(JSON.stringify(csv.provenance.filters.types) === '["lung"]', "the provenance names the filters");
  check(csv.provenance.total === shown && csv.provenance.rows === shown, "the provenance counts the rows");
  check(typeof csv.provenance.model.weights_sha256 === "string" && csv.provenance.generation >= 1, "the provenance names the model and generation");
  check(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(csv.provenance.exported_at), "the provenance is dated in UTC");
  const firstCard = await cards().first().getAttribute("data-id");
  check(csv.column("id")[0] === firstCard, "the first row is the first card");
  const [jsonlDownload] = await Promise.all([page.waitForEvent("download"), page.click("#export-jsonl")]);
  check(jsonlDownload.suggestedFilename() === "lesions.jsonl", `JSON Lines file name (${jsonlDownload.suggestedFilename()})`);
  const jsonlPath = join(out, "export.jsonl");
  await jsonlDownload.saveAs(jsonlPath);
  const [head, ...lines] = readFileSync(jsonlPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  check(head.provenance && head.provenance.total === shown, "JSON Lines starts with the provenance");
  check(lines.length === csv.rows.length && lines.every((l, i) => String(l.id) === csv.column("id")[i]), "JSON Lines has the same rows in the same order");
  await shot("exported");

  // 9. Back (twice: past the cleared page) returns to the refined pivot, results included.
  await page.goBack();
  await page.goBack();
  await page.waitForFunction((u) => location.href === u, refinedUrl, { timeout: 15000 });
  await page.waitForFunction(() => document.querySelectorAll("#grid .card").length > 0, null, { timeout: 30000 });
  await waitIdle();
  check((await page.inputValue("#pick")) === pivotKey, "back restores the pivot query");
  check((await page.locator("#refine .chip.pos").count()) === 1, "back restores the refinement");
  check(pivotUrl !== refinedUrl, "refining made a new history entry");
  await shot("back");

  // 9b. A misspelt search offers a respelling when the server has one; clicking it searches it.
  await page.click("#clear");
  await page.fill("#text", "kidny cyst");
  await page.click("#search");
  await waitIdle();
  const offered = await page.evaluate(async () => {
    const key = sessionStorage.getItem("lesion-search-key");
    const headers = { "Content-Type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) };
    const r = await fetch("/api/search", { method: "POST", headers, body: JSON.stringify({ text: "kidny cyst", k: 1 }) });
    return (await r.json()).did_you_mean;
  });
  check((await page.isVisible("#did-you-mean")) === Boolean(offered), `"Did you mean" is shown exactly when the server offers one (${offered})`);
  if (offered) {
    check((await page.textContent("#did-you-mean-text")) === offered, "the offered respelling is shown");
    await page.click("#did-you-mean-text");
    await waitIdle();
    check((await page.inputValue("#text")) === offered, "clicking the respelling searches for it");
    check(!(await page.isVisible("#did-you-mean")), "the respelled search needs no respelling");
  }
  await shot("did-you-mean");

  // 10. A bad file shows an error in the page, not a blank screen.
  await page.setInputFiles("#file", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("not a slice") });
  await page.waitForSelector("#error:not([hidden])");
  check(/notes\.txt/.test(await page.textContent("#error-text")), "the error names the file");
  check((await cards().count()) > 0, "the results stay");
  await shot("bad-file");

  // 11. Keyboard: the viewer takes a box from the keyboard and Enter searches.
  await page.click("#error-close");
  await page.setInputFiles("#file", args.dicom);
  await page.waitForFunction(() => document.getElementById("viewer-empty").hidden);
  await waitIdle();
  await page.focus("#viewer");
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("+");
  check(/Box: \d/.test(await page.textContent("#box-readout")), "the keyboard draws a box");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => new URLSearchParams(location.search).has("upload"), null, { timeout: 30000 });
  await waitIdle();
  check((await cards().count()) > 0, "Enter on the viewer searches");
  await shot("keyboard");

  // 12. Adding the boxed lesion: the read key cannot write, so the page asks for the admin
  // key, queues the write and follows its task until the new lesion can be opened.
  if (args["admin-key"]) {
    check(await page.isVisible("#add-open"), "a boxed upload can be added when the server takes writes");
    await page.click("#add-open");
    await page.fill("#add-patient", "990001");
    await page.fill("#add-study", "1");
    await page.selectOption("#add-type", "lung");
    await page.selectOption("#add-sex", "F");
    await page.fill("#add-age", "61");
    await page.fill("#add-report", "Spiculated nodule added from the browser");
    await shot("add-form");
    await page.click("#add-form button[type=submit]");
    await page.waitForSelector("#key-dialog[open]", { timeout: 30000 });
    check(/admin key/.test(await page.textContent("#key-message")), "the page asks for the admin key");
    await page.fill("#key-input", args["admin-key"]);
    await page.click("#key-form button[type=submit]");
    await page.waitForFunction(() => /Added as lesion/.test(document.getElementById("add-status").textContent), null, { timeout: 120000 });
    check(/generation 2/.test(await page.textContent("#add-status")), "the add published generation 2");
    await shot("added");
    await page.click("#add-view");
    await page.waitForSelector("#detail[open]", { timeout: 30000 });
    await waitIdle();
    check(/added from the browser/.test(await page.textContent("#detail-report")), "the added lesion opens with its report");
    check(/lung/.test(await page.textContent("#detail-title")), "the added lesion has its type");
    await shot("added-detail");
    await page.click("#detail-close");
  }

  check(consoleErrors.filter((e) => !/Failed to load resource/.test(e)).length === 0, `no script errors: ${consoleErrors.join(" | ")}`);
  writeFileSync(join(out, "PASSED"), `${step} steps\n`);
  console.log(`UI: ${step} steps passed; screenshots in ${out}`);
} catch (e) {
  await page.screenshot({ path: join(out, "failure.png"), fullPage: true }).catch(() => {});
  console.error(e.stack || String(e));
  if (consoleErrors.length) console.error(`console: ${consoleErrors.join(" | ")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
