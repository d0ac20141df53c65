/**
 * Renders the OCR evaluation data shipped in data/ (run with `npm run make-data`):
 *   data/rec/calib/*.png, data/rec/held/*.png + labels.json   text lines for PP-OCRv4 rec
 *   data/cls/*.png + labels.json                              upright / rotated lines for the cls model
 *   data/det/*.png                                            640×640 pages with text for PP-OCRv4 det
 * Deterministic: a seeded generator picks words, fonts, sizes, colours and noise.
 * The rec/det lines are Chinese with digits, the language the ch_PP-OCRv4 models are trained on;
 * rendering them needs Debian's fonts-wqy-microhei and fonts-wqy-zenhei (the PNGs are committed,
 * so only regenerating the data needs the fonts). @napi-rs/canvas draws the text; it is not a
 * dependency of the package (the registry here carries only its Linux builds, which would break
 * `npm ci` elsewhere), so `npm run make-data` installs it without saving it.
 */
import * as fs from 'fs';
import * as path from 'path';
import { GlobalFonts, SKRSContext2D, createCanvas } from '@napi-rs/canvas';
import { bundledModelPath } from '../sdk/models';

const FONT_DIR = '/usr/share/fonts/truetype/dejavu';
const FONTS = ['DejaVuSans', 'DejaVuSerif', 'DejaVuSansMono', 'DejaVuSansCondensed', 'DejaVuSans-Bold', 'DejaVuSerif-Bold', 'DejaVuSerifCondensed'];
const CJK_FONTS: Array<[string, string]> = [['/usr/share/fonts/truetype/wqy/wqy-microhei.ttc', 'WQY MicroHei'], ['/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc', 'WQY ZenHei']];
const CJK_STYLES = ['WQY MicroHei', 'WQY ZenHei', 'bold WQY MicroHei', 'bold WQY ZenHei'];

const ZH_WORDS = `发票 金额 日期 订单 客户 地址 价格 数量 模型 量化 报告 合计 余额 付款 收据 车站 北京 上海 广州 深圳
市场 花园 窗口 公告 服务 中心 今天 明天 上午 下午 分钟 小时 星期 月份 年度 版本 更新 第一 最后 表格 图片 章节
结果 数值 误差 范围 快递 包裹 电话 邮箱 办公室 楼层 房间 人民币 银行 医院 学校 图书馆 火车 飞机 天气 温度 湿度
营业时间 联系方式 注意事项 欢迎光临 请勿吸烟 出口 入口 停车场 电梯 会议室 员工 工资 税率 总计 单价 编号 名称 规格
型号 产地 有效期 生产日期 保质期 重量 长度 宽度 高度 面积 体积 速度 时间 地点 原因 说明 备注`.split(/\s+/);

const WORDS = `invoice total amount date order number customer address street city price quantity model
quant scale offset layer tensor channel report summary account balance payment receipt station
north south east west river market garden window paper letter notice public service center
open close today tomorrow morning evening minute second hour week month year version update
first last next previous page line table figure section chapter result value error range
delivery package shipping tracking phone email office building floor room level access`.split(/\s+/);

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** A Chinese line: words, amounts, dates and codes, no spaces (as Chinese text is written). */
function zhLine(r: () => number): string {
  const word = () => ZH_WORDS[Math.floor(r() * ZH_WORDS.length)];
  const num = (d: number) => String(Math.floor(r() * 10 ** d));
  const kind = r();
  if (kind < 0.25) return `${word()}${word()}${num(3)}`;
  if (kind < 0.45) return `${word()}：${num(3)}.${num(1)}${num(1)}元`;
  if (kind < 0.6) return `${2000 + Math.floor(r() * 30)}年${1 + Math.floor(r() * 12)}月${1 + Math.floor(r() * 28)}日`;
  if (kind < 0.8) return `${word()}${word()}${word()}`;
  return `${word()}${num(4)}号`;
}

function textLine(r: () => number): string {
  const kind = r();
  const word = () => WORDS[Math.floor(r() * WORDS.length)];
  const cap = (w: string) => w[0].toUpperCase() + w.slice(1);
  const num = (d: number) => String(Math.floor(r() * 10 ** d)).padStart(Math.max(1, Math.floor(d / 2)), '0');
  if (kind < 0.25) return `${cap(word())} ${word()} ${num(3)}`;
  if (kind < 0.45) return `${cap(word())}: ${num(2)}.${num(2)}`;
  if (kind < 0.6) return `${num(4)}-${num(2)}-${num(2)}`;
  if (kind < 0.8) return `${cap(word())} ${word()}`;
  return `${word().toUpperCase()} ${num(2)}`;
}

function registerFonts(): void {
  for (const f of FONTS) GlobalFonts.registerFromPath(path.join(FONT_DIR, `${f}.ttf`), f);
  for (const [file, family] of CJK_FONTS) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: apt-get install fonts-wqy-microhei fonts-wqy-zenhei`);
    GlobalFonts.registerFromPath(file, family);
  }
}

/** Every character of the generated text must be one the rec model can output. */
function checkAgainstKeys(texts: string[]): void {
  const keys = new Set(fs.readFileSync(bundledModelPath('recKeys'), 'utf8').split(/\r?\n/));
  const missing = new Set([...texts.join('')].filter((c) => !keys.has(c)));
  if (missing.size) throw new Error(`characters not in the rec model's key file: ${[...missing].join('')}`);
}


function drawLine(ctx: SKRSContext2D, text: string, x: number, y: number, size: number, font: string, ink: string): number {
  ctx.font = `${size}px ${font}`;
  ctx.fillStyle = ink;
  ctx.textBaseline = 'middle';
  ctx.fillText(text, x, y);
  return ctx.measureText(text).width;
}

function addNoise(ctx: SKRSContext2D, w: number, h: number, r: () => number, amount: number): void {
  const img = ctx.getImageData(0, 0, w, h);
  for (let i = 0; i < img.data.length; i += 4) {
    const n = (r() - 0.5) * amount;
    for (let c = 0; c < 3; c++) img.data[i + c] = Math.max(0, Math.min(255, img.data[i + c] + n));
  }
  ctx.putImageData(img, 0, 0);
}

/** One text line on its own image, height 48, width fitted to the text. */
function renderLine(text: string, r: () => number): Buffer {
  const font = CJK_STYLES[Math.floor(r() * CJK_STYLES.length)];
  const size = 24 + Math.floor(r() * 10);
  const probe = createCanvas(10, 10).getContext('2d');
  probe.font = `${size}px ${font}`;
  const width = Math.ceil(probe.measureText(text).width) + 16;
  const canvas = createCanvas(width, 48);
  const ctx = canvas.getContext('2d');
  const bg = 215 + Math.floor(r() * 40);
  ctx.fillStyle = `rgb(${bg},${bg - Math.floor(r() * 15)},${bg - Math.floor(r() * 25)})`;
  ctx.fillRect(0, 0, width, 48);
  const ink = Math.floor(r() * 70);
  drawLine(ctx, text, 8, 24 + (r() - 0.5) * 4, size, font, `rgb(${ink},${ink},${ink + Math.floor(r() * 40)})`);
  addNoise(ctx, width, 48, r, 18);
  return canvas.toBuffer('image/png');
}

/** Draws with `draw` turned half a circle. */
function rotate180(w: number, h: number, draw: (ctx: SKRSContext2D) => void): Buffer {
  const canvas = createCanvas(w, h);
  const ctx = canvas.getContext('2d');
  ctx.translate(w, h);
  ctx.rotate(Math.PI);
  draw(ctx);
  return canvas.toBuffer('image/png');
}

function renderPage(r: () => number): Buffer {
  const canvas = createCanvas(640, 640);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = 'rgb(246,244,238)';
  ctx.fillRect(0, 0, 640, 640);
  let y = 40 + r() * 20;
  while (y < 600) {
    const size = 18 + Math.floor(r() * 16);
    const text = r() < 0.5 ? `${zhLine(r)}${zhLine(r)}` : `${textLine(r)} ${textLine(r)}`;
    drawLine(ctx, text, 30 + r() * 80, y, size, r() < 0.5 ? CJK_STYLES[Math.floor(r() * 2)] : FONTS[Math.floor(r() * FONTS.length)], 'rgb(20,20,30)');
    y += size * 1.6 + r() * 30;
  }
  addNoise(ctx, 640, 640, r, 10);
  return canvas.toBuffer('image/png');
}

function writeSet(dir: string, entries: Array<[string, Buffer]>, labels?: Record<string, string>): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, png] of entries) fs.writeFileSync(path.join(dir, name), png);
  if (labels) fs.writeFileSync(path.join(dir, 'labels.json'), `${JSON.stringify(labels, null, 1)}\n`);
}

function main(): void {
  registerFonts();
  const root = path.join(__dirname, '..', '..', 'data');
  for (const [set, count, seed] of [['calib', 64, 1], ['held', 240, 2]] as const) {
    const r = rng(seed);
    const labels: Record<string, string> = {};
    const files: Array<[string, Buffer]> = [];
    for (let i = 0; i < count; i++) {
      const text = zhLine(r);
      const name = `${String(i).padStart(3, '0')}.png`;
      files.push([name, renderLine(text, r)]);
      labels[name] = text;
    }
    checkAgainstKeys(Object.values(labels));
    writeSet(path.join(root, 'rec', set), files, labels);
  }
  // cls: lines drawn upright (label "0") or turned half a circle (label "180")
  const r = rng(3);
  const clsLabels: Record<string, string> = {};
  const clsFiles: Array<[string, Buffer]> = [];
  for (let i = 0; i < 120; i++) {
    const text = textLine(r);
    const font = FONTS[Math.floor(r() * FONTS.length)];
    const size = 26 + Math.floor(r() * 8);
    const probe = createCanvas(10, 10).getContext('2d');
    probe.font = `${size}px ${font}`;
    const w = Math.ceil(probe.measureText(text).width) + 16;
    const draw = (ctx: SKRSContext2D) => {
      ctx.fillStyle = 'rgb(240,238,230)';
      ctx.fillRect(0, 0, w, 48);
      drawLine(ctx, text, 8, 24, size, font, 'rgb(25,25,25)');
    };
    const rotated = i % 2 === 1;
    const canvas = createCanvas(w, 48);
    draw(canvas.getContext('2d'));
    const png = rotated ? rotate180(w, 48, draw) : canvas.toBuffer('image/png');
    const name = `${String(i).padStart(3, '0')}.png`;
    clsFiles.push([name, png]);
    clsLabels[name] = rotated ? '180' : '0';
  }
  writeSet(path.join(root, 'cls'), clsFiles, clsLabels);
  const pr = rng(4);
  writeSet(path.join(root, 'det'), Array.from({ length: 8 }, (_, i): [string, Buffer] => [`page${i}.png`, renderPage(pr)]));
  console.log('wrote data/rec/{calib,held}, data/cls, data/det');
}

main();
