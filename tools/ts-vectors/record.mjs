// Records test vectors for driftshare.models from Drift's own TypeScript SDK.
//
// Every mainnet PerpMarket fixture is decoded with the SDK's IDL coder and run through the SDK's
// math at a fixed clock, so the Python tests compare against numbers computed outside driftshare.
//
//   cd tools/ts-vectors && npm ci && node record.mjs [FIXTURES_DIR] [OUT_FILE]

import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const sdk = require('@drift-labs/sdk');
const idl = require('@drift-labs/sdk/lib/node/idl/drift.json');
const sdkVersion = require('@drift-labs/sdk/package.json').version;

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const fixturesDir = resolve(process.argv[2] ?? join(repo, 'tests', 'fixtures', 'mainnet'));
const outFile = resolve(process.argv[3] ?? join(repo, 'tests', 'vectors', 'mainnet_ts_sdk.json'));

// The clock for every time-dependent value: ten minutes after the market's newest timestamp.
const CLOCK_OFFSET_S = 600;

const coder = new sdk.CustomBorshCoder(idl);
const { BN, ZERO, PRICE_PRECISION, FUNDING_RATE_PRECISION, BASE_PRECISION } = sdk;

function bnMax(...values) {
	return values.reduce((a, b) => (a.gt(b) ? a : b));
}

function vector(file) {
	const raw = JSON.parse(readFileSync(join(fixturesDir, file), 'utf8'));
	const data = Buffer.from(raw.account.data[0], 'base64');
	const market = coder.accounts.decode('PerpMarket', data);
	const amm = market.amm;
	const hist = amm.historicalOracleData;

	const now = bnMax(amm.lastFundingRateTs, hist.lastOraclePriceTwapTs, amm.lastMarkPriceTwapTs).addn(
		CLOCK_OFFSET_S
	);
	// The oracle as last seen by the program: driftshare's fallback when no live oracle is given.
	const oracle = {
		price: hist.lastOraclePrice,
		slot: amm.lastUpdateSlot,
		confidence: hist.lastOracleConf,
		hasSufficientNumberOfDataPoints: true,
		twap: hist.lastOraclePriceTwap,
		twapConfidence: ZERO,
	};
	const mmOracle = { ...oracle, isMMOracleActive: false };
	const isPrediction = sdk.isVariant(market.contractType, 'prediction');

	// calculateBidAskPrice's body with `now` passed on: the SDK leaves it undefined there, so
	// calculateSpread would read the wall clock.
	const updated = sdk.calculateUpdatedAMM(amm, mmOracle);
	const [bidReserves, askReserves] = sdk.calculateSpreadReserves(
		updated,
		mmOracle,
		now,
		isPrediction
	);
	const bid = sdk.calculatePrice(
		bidReserves.baseAssetReserve,
		bidReserves.quoteAssetReserve,
		updated.pegMultiplier
	);
	const ask = sdk.calculatePrice(
		askReserves.baseAssetReserve,
		askReserves.quoteAssetReserve,
		updated.pegMultiplier
	);
	const mid = bid.add(ask).divn(2);
	const [markTwapLive, oracleTwapLive, longRate, shortRate] =
		sdk.calculateLongShortFundingRateAndLiveTwaps(market, mmOracle, oracle, mid, now);

	// Settled rate as getLastFundingBasis (math/market.ts) reads it: quote per base over the oracle
	// twap the program stored with it, in floating point as the UI shows it.
	const twapDivisor = amm.lastFundingOracleTwap.gt(ZERO)
		? amm.lastFundingOracleTwap
		: hist.lastOraclePriceTwap;
	const hourly =
		amm.lastFundingRate.toNumber() /
		FUNDING_RATE_PRECISION.toNumber() /
		(twapDivisor.toNumber() / PRICE_PRECISION.toNumber());

	const nextWait = sdk.timeRemainingUntilUpdate(
		amm.lastFundingRateTs,
		amm.lastFundingRateTs,
		amm.fundingPeriod
	);
	const long = amm.baseAssetAmountLong;
	const short = amm.baseAssetAmountShort;

	return {
		file,
		market_index: market.marketIndex,
		name: sdk.decodeName(market.name),
		status: sdk.getVariant(market.status),
		contract_type: sdk.getVariant(market.contractType),
		now: now.toNumber(),
		last_funding_rate: amm.lastFundingRate.toString(),
		last_funding_oracle_twap: amm.lastFundingOracleTwap.toString(),
		last_oracle_price_twap: hist.lastOraclePriceTwap.toString(),
		funding_twap_divisor: twapDivisor.toString(),
		rate_hourly: hourly,
		rate_8h_pct: hourly * 8 * 100,
		rate_annual_pct: hourly * 24 * 365.25 * 100,
		oracle_price: hist.lastOraclePrice.toString(),
		bid_price: bid.toString(),
		ask_price: ask.toString(),
		mark_price: mid.toString(),
		mark_twap_live: markTwapLive.toString(),
		oracle_twap_live: oracleTwapLive.toString(),
		predicted_long_rate: longRate.toString(),
		predicted_short_rate: shortRate.toString(),
		last_funding_rate_ts: amm.lastFundingRateTs.toNumber(),
		funding_period: amm.fundingPeriod.toNumber(),
		next_funding_ts: amm.lastFundingRateTs.add(nextWait).toNumber(),
		seconds_to_next_funding: sdk
			.timeRemainingUntilUpdate(now, amm.lastFundingRateTs, amm.fundingPeriod)
			.toNumber(),
		base_asset_amount_long: long.toString(),
		base_asset_amount_short: short.toString(),
		open_interest: long.add(short.abs()).toString(),
		open_interest_base: sdk.convertToNumber(long.add(short.abs()), BASE_PRECISION),
	};
}

const files = readdirSync(fixturesDir)
	.filter((f) => f.endsWith('.json'))
	.sort();
const out = {
	generator: `tools/ts-vectors/${basename(fileURLToPath(import.meta.url))}`,
	sdk: '@drift-labs/sdk',
	sdk_version: sdkVersion,
	node_version: process.version,
	clock: `max(last_funding_rate_ts, last_oracle_price_twap_ts, last_mark_price_twap_ts) + ${CLOCK_OFFSET_S}`,
	oracle: 'historical_oracle_data: price=last_oracle_price, confidence=last_oracle_conf',
	vectors: files.map(vector),
};
writeFileSync(outFile, JSON.stringify(out, null, 2) + '\n');
console.log(`wrote ${out.vectors.length} vectors to ${outFile}`);
