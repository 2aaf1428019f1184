// qemu's name for an image's node where its messages name one ("#block" + a counter of qemu's
// own, which varies from run to run even for the same command): a stand-in of the same shape.
export const blockNodeName = (): string => `#block1${String(Math.floor(Math.random() * 100)).padStart(2, '0')}`;
