/**
 * The contract suite every Watchtower transport runs: a table of named cases and the function
 * that registers them with vitest for one harness.
 */
export { describeTransportConformance } from './describe-transport-conformance.js';
export type { ConformanceOptions } from './describe-transport-conformance.js';
export { conformanceCases } from './conformance-cases.js';
export type {
  ConformanceCase,
  ConformanceContext,
  ConformanceHarness,
  ConformanceRequirement,
  ConformanceTimeouts,
  HarnessFeature,
  TestBus,
} from './harness.js';
export {
  publishesAndDeliversEachEventIntact,
  deliversEveryEventToEachIndependentSubscriber,
  routesEachTypeToItsOwnSubscriber,
  deliversOneTypeInPublishOrder,
  deliversDottedTypesThroughWildcards,
  letsANewSubscriberReadEarlierEvents,
  roundTripsLargeAndUnicodePayloads,
  roundTripsHeadersAndMetadata,
} from './cases/publish-subscribe.js';
export {
  redeliversAFailedHandlerWithAttemptTwo,
  redeliversANackedDelivery,
  redeliversToTheGroupWhatAClosedClientNeverAcked,
  holdsBackADelayedNack,
} from './cases/redelivery.js';
export {
  keepsDeliveringToAGroupAfterAMemberLeaves,
  givesEachEventToOneMemberOfEachGroup,
} from './cases/consumer-groups.js';
export {
  goesOnDeliveringAfterHandlerFailures,
  deadLettersAfterRetriesWithTheReason,
  deadLettersMalformedBytes,
  deadLettersAMisroutedEvent,
} from './cases/dead-letters.js';
export {
  closesSubscriptionsAndBusConcurrently,
  sendsEveryAcceptedEventBeforeClose,
  resumesDeliveryAfterBrokerRestart,
  refusesMisspeltOptionsWithConfig,
  reportsHealthAndRefusesWorkAfterClose,
  reportsTheConnectionAndConfirmsPublishesAcrossARestart,
} from './cases/lifecycle.js';
export {
  runFaultRun,
  describeFaultRun,
  faultConsumerCommand,
  expectNothingLost,
  longestGap,
  pauseAround,
  FAULT_RUN_EVENTS,
  BROKER_KILLED_TWICE,
  CONSUMER_KILLED,
} from './fault-run.js';
export type {
  FaultBroker,
  FaultPublisher,
  FaultRunOptions,
  FaultRunResult,
  FaultStep,
} from './fault-run.js';
export { describeTelemetryAcrossProcesses } from './telemetry-across-processes.js';
export type { JsonConfig, TelemetryHarness } from './telemetry-across-processes.js';
