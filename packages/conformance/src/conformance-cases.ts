import type { ConformanceCase } from './harness.js';
import {
  goesOnDeliveringAfterHandlerFailures,
  deadLettersAfterRetriesWithTheReason,
  deadLettersMalformedBytes,
  deadLettersAMisroutedEvent,
} from './cases/dead-letters.js';
import {
  keepsDeliveringToAGroupAfterAMemberLeaves,
  givesEachEventToOneMemberOfEachGroup,
} from './cases/consumer-groups.js';
import {
  closesSubscriptionsAndBusConcurrently,
  sendsEveryAcceptedEventBeforeClose,
  resumesDeliveryAfterBrokerRestart,
  refusesMisspeltOptionsWithConfig,
  reportsHealthAndRefusesWorkAfterClose,
  reportsTheConnectionAndConfirmsPublishesAcrossARestart,
} from './cases/lifecycle.js';
import {
  publishesAndDeliversEachEventIntact,
  deliversEveryEventToEachIndependentSubscriber,
  routesEachTypeToItsOwnSubscriber,
  deliversOneTypeInPublishOrder,
  deliversDottedTypesThroughWildcards,
  letsANewSubscriberReadEarlierEvents,
  roundTripsLargeAndUnicodePayloads,
  roundTripsHeadersAndMetadata,
} from './cases/publish-subscribe.js';
import {
  redeliversAFailedHandlerWithAttemptTwo,
  redeliversANackedDelivery,
  redeliversToTheGroupWhatAClosedClientNeverAcked,
  holdsBackADelayedNack,
} from './cases/redelivery.js';

/**
 * Every conformance case, in the order they run. The order is the one the suite has always
 * had, so that reports stay comparable; a new case goes at the end.
 */
export const conformanceCases: readonly ConformanceCase[] = Object.freeze([
  publishesAndDeliversEachEventIntact,
  deliversEveryEventToEachIndependentSubscriber,
  routesEachTypeToItsOwnSubscriber,
  redeliversAFailedHandlerWithAttemptTwo,
  redeliversANackedDelivery,
  redeliversToTheGroupWhatAClosedClientNeverAcked,
  keepsDeliveringToAGroupAfterAMemberLeaves,
  closesSubscriptionsAndBusConcurrently,
  goesOnDeliveringAfterHandlerFailures,
  deliversOneTypeInPublishOrder,
  sendsEveryAcceptedEventBeforeClose,
  deliversDottedTypesThroughWildcards,
  givesEachEventToOneMemberOfEachGroup,
  letsANewSubscriberReadEarlierEvents,
  resumesDeliveryAfterBrokerRestart,
  deadLettersAfterRetriesWithTheReason,
  deadLettersMalformedBytes,
  roundTripsLargeAndUnicodePayloads,
  roundTripsHeadersAndMetadata,
  holdsBackADelayedNack,
  refusesMisspeltOptionsWithConfig,
  reportsHealthAndRefusesWorkAfterClose,
  reportsTheConnectionAndConfirmsPublishesAcrossARestart,
  deadLettersAMisroutedEvent,
]);
