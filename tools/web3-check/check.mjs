// Sends two transactions to a simulator with @solana/web3.js and prints what the node says.
// Input on stdin (JSON): {"url", "secretKey": [64 bytes], "instruction": {"programId",
// "keys": [{"pubkey", "isSigner", "isWritable"}], "data": base64}}.
// Output on stdout (one JSON line): the transfer's and the instruction's signatures and statuses.
import { readFileSync } from "node:fs";
import {
  Connection,
  Keypair,
  LAMPORTS_PER_SOL,
  PublicKey,
  SystemProgram,
  Transaction,
  TransactionInstruction,
  sendAndConfirmTransaction,
} from "@solana/web3.js";

const input = JSON.parse(readFileSync(0, "utf8"));
const connection = new Connection(input.url, "confirmed");
const payer = Keypair.fromSecretKey(Uint8Array.from(input.secretKey));

const airdrop = await connection.requestAirdrop(payer.publicKey, LAMPORTS_PER_SOL);
await connection.confirmTransaction({ signature: airdrop, ...(await connection.getLatestBlockhash()) });

const recipient = Keypair.generate().publicKey;
const transfer = new Transaction().add(
  SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: recipient, lamports: 1000 }),
);
const transferSignature = await sendAndConfirmTransaction(connection, transfer, [payer]);

const { programId, keys, data } = input.instruction;
const instruction = new TransactionInstruction({
  programId: new PublicKey(programId),
  keys: keys.map((key) => ({ ...key, pubkey: new PublicKey(key.pubkey) })),
  data: Buffer.from(data, "base64"),
});
const latest = await connection.getLatestBlockhash();
const tx = new Transaction({ feePayer: payer.publicKey, ...latest }).add(instruction);
tx.sign(payer);
const signature = await connection.sendRawTransaction(tx.serialize(), { skipPreflight: true });
// web3.js rejects the confirmation with the transaction's error when it failed.
const confirmation = await connection
  .confirmTransaction({ signature, ...latest })
  .then((result) => result.value.err, (err) => err);

const statuses = await connection.getSignatureStatuses([transferSignature, signature]);
console.log(
  JSON.stringify({
    transfer: {
      signature: transferSignature,
      status: statuses.value[0],
      received: await connection.getBalance(recipient),
    },
    instruction: { signature, confirmation, status: statuses.value[1] },
  }),
);
